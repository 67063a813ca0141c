"""Spike data sets: the in-memory representation, SHD/SSC files, labelled recordings, synthetic corpora,
labelled keyword streams and their scoring, and stretches for stream training."""

from edgekws.toolkit.data._info import format_info as format_info
from edgekws.toolkit.data._info import info as info
from edgekws.toolkit.data._kws_scoring import KeywordSpan as KeywordSpan
from edgekws.toolkit.data._kws_scoring import StreamDetection as StreamDetection
from edgekws.toolkit.data._kws_scoring import StreamScore as StreamScore
from edgekws.toolkit.data._kws_scoring import score_stream as score_stream
from edgekws.toolkit.data._recordings import import_recordings as import_recordings
from edgekws.toolkit.data._recordings import read_recordings as read_recordings
from edgekws.toolkit.data._shd import read_shd as read_shd
from edgekws.toolkit.data._shd import write_shd as write_shd
from edgekws.toolkit.data._spikes import DatasetError as DatasetError
from edgekws.toolkit.data._spikes import SpikeDataset as SpikeDataset
from edgekws.toolkit.data._stream import Clip as Clip
from edgekws.toolkit.data._stream import Pools as Pools
from edgekws.toolkit.data._stream import Stream as Stream
from edgekws.toolkit.data._stream import StreamError as StreamError
from edgekws.toolkit.data._stream import build_stream as build_stream
from edgekws.toolkit.data._stream import compose as compose
from edgekws.toolkit.data._stream import corpus_pools as corpus_pools
from edgekws.toolkit.data._stream import read_truth as read_truth
from edgekws.toolkit.data._stream import recording_pools as recording_pools
from edgekws.toolkit.data._stream import write_stream as write_stream
from edgekws.toolkit.data._stretches import StretchPlan as StretchPlan
from edgekws.toolkit.data._stretches import background_index as background_index
from edgekws.toolkit.data._stretches import encode_stretches as encode_stretches
from edgekws.toolkit.data._stretches import is_stream_set as is_stream_set
from edgekws.toolkit.data._stretches import make_stretches as make_stretches
from edgekws.toolkit.data._stretches import stream_spans as stream_spans
from edgekws.toolkit.data._synth import SynthError as SynthError
from edgekws.toolkit.data._synth import synthesize as synthesize
