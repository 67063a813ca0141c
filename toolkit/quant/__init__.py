"""Quantization of float models to Loihi 2 fixed point."""

from edgekws.toolkit.quant._quantize import DEFAULT_PERCENTILE as DEFAULT_PERCENTILE
from edgekws.toolkit.quant._quantize import LayerQuantReport as LayerQuantReport
from edgekws.toolkit.quant._quantize import QuantizationError as QuantizationError
from edgekws.toolkit.quant._quantize import QuantReport as QuantReport
from edgekws.toolkit.quant._quantize import quantize as quantize
