"""Spike data sets: the in-memory representation, SHD/SSC and Speech Commands readers, espeak-ng synthesis."""

from edgekws.toolkit.data._shd import read_shd as read_shd
from edgekws.toolkit.data._shd import write_shd as write_shd
from edgekws.toolkit.data._speech_commands import read_speech_commands as read_speech_commands
from edgekws.toolkit.data._spikes import DatasetError as DatasetError
from edgekws.toolkit.data._spikes import SpikeDataset as SpikeDataset
from edgekws.toolkit.data._synth import SynthError as SynthError
from edgekws.toolkit.data._synth import synthesize as synthesize
