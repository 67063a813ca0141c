"""edgekws.toolkit.export: exporters of the float network, ONNX (whole-sequence and streaming) and NIR.

Names are imported when first used (:mod:`edgekws.toolkit._lazy`), so that the package loads without onnx
and nir.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgekws.toolkit._lazy import lazy_exports

if TYPE_CHECKING:
    from edgekws.toolkit.export._nir import export_nir as export_nir
    from edgekws.toolkit.export._nir import nir_metadata as nir_metadata
    from edgekws.toolkit.export._onnx import export_onnx as export_onnx
    from edgekws.toolkit.export._onnx import export_onnx_streaming as export_onnx_streaming
    from edgekws.toolkit.export._onnx import state_layout as state_layout
    from edgekws.toolkit.export._params import ExportError as ExportError

__getattr__, __all__ = lazy_exports(
    __name__,
    {
        "export_nir": "_nir",
        "nir_metadata": "_nir",
        "export_onnx": "_onnx",
        "export_onnx_streaming": "_onnx",
        "state_layout": "_onnx",
        "ExportError": "_params",
    },
)
