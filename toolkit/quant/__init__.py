"""Quantization of float models to Loihi 2 fixed point, and scoring them on the agent's backends."""

from edgekws.toolkit.quant._backends import LavaBridge as LavaBridge
from edgekws.toolkit.quant._backends import deployed as deployed
from edgekws.toolkit.quant._backends import deployed_readout as deployed_readout
from edgekws.toolkit.quant._backends import deployment_files as deployment_files
from edgekws.toolkit.quant._backends import lava_python as lava_python
from edgekws.toolkit.quant._backends import run_in_batches as run_in_batches
from edgekws.toolkit.quant._quantize import DEFAULT_PERCENTILE as DEFAULT_PERCENTILE
from edgekws.toolkit.quant._quantize import LayerQuantReport as LayerQuantReport
from edgekws.toolkit.quant._quantize import QuantizationError as QuantizationError
from edgekws.toolkit.quant._quantize import QuantReport as QuantReport
from edgekws.toolkit.quant._quantize import quantize as quantize
