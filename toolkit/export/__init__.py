"""Exporters of the float network: ONNX (whole-sequence and streaming) and NIR."""

from edgekws.toolkit.export._nir import export_nir as export_nir
from edgekws.toolkit.export._nir import nir_metadata as nir_metadata
from edgekws.toolkit.export._onnx import export_onnx as export_onnx
from edgekws.toolkit.export._onnx import export_onnx_streaming as export_onnx_streaming
from edgekws.toolkit.export._onnx import state_layout as state_layout
from edgekws.toolkit.export._params import ExportError as ExportError
