"""Spike data sets: the in-memory representation, SHD/SSC files, labelled recordings, synthetic corpora."""

from edgekws.toolkit.data._recordings import import_recordings as import_recordings
from edgekws.toolkit.data._recordings import read_recordings as read_recordings
from edgekws.toolkit.data._shd import read_shd as read_shd
from edgekws.toolkit.data._shd import write_shd as write_shd
from edgekws.toolkit.data._spikes import DatasetError as DatasetError
from edgekws.toolkit.data._spikes import SpikeDataset as SpikeDataset
from edgekws.toolkit.data._synth import SynthError as SynthError
from edgekws.toolkit.data._synth import synthesize as synthesize
