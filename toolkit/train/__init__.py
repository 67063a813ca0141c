"""edgekws.toolkit.train: Eventprop (and BPTT) training of recurrent spiking networks, run folders,
evaluation and figures.

Names are imported when first used (:mod:`edgekws.toolkit._lazy`): the run-folder functions
(``load_run``, ``read_metrics``, …) load without JAX, the trainer and the float model with it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgekws.toolkit._lazy import lazy_exports

if TYPE_CHECKING:
    from edgekws.toolkit.train._bptt import bptt_loss_and_grad as bptt_loss_and_grad
    from edgekws.toolkit.train._config import ConfigError as ConfigError
    from edgekws.toolkit.train._config import TrainConfig as TrainConfig
    from edgekws.toolkit.train._evaluate import BACKENDS as BACKENDS
    from edgekws.toolkit.train._evaluate import EvalError as EvalError
    from edgekws.toolkit.train._evaluate import evaluate as evaluate
    from edgekws.toolkit.train._evaluate import float_readout as float_readout
    from edgekws.toolkit.train._evaluate import plot_confusion as plot_confusion
    from edgekws.toolkit.train._eventprop import LossConfig as LossConfig
    from edgekws.toolkit.train._eventprop import eventprop_loss_and_grad as eventprop_loss_and_grad
    from edgekws.toolkit.train._loop import TrainError as TrainError
    from edgekws.toolkit.train._loop import TrainResult as TrainResult
    from edgekws.toolkit.train._loop import train as train
    from edgekws.toolkit.train._merge import MergeError as MergeError
    from edgekws.toolkit.train._merge import merge_runs as merge_runs
    from edgekws.toolkit.train._mlgenn import MlgennError as MlgennError
    from edgekws.toolkit.train._mlgenn import import_mlgenn as import_mlgenn
    from edgekws.toolkit.train._model import SimOutput as SimOutput
    from edgekws.toolkit.train._model import init_params as init_params
    from edgekws.toolkit.train._model import simulate as simulate
    from edgekws.toolkit.train._report import plot_curves as plot_curves
    from edgekws.toolkit.train._report import plot_raster as plot_raster
    from edgekws.toolkit.train._run import LoadedRun as LoadedRun
    from edgekws.toolkit.train._run import RunError as RunError
    from edgekws.toolkit.train._run import latest_checkpoint as latest_checkpoint
    from edgekws.toolkit.train._run import load_run as load_run
    from edgekws.toolkit.train._run import read_metrics as read_metrics
    from edgekws.toolkit.train._run import read_run_info as read_run_info
    from edgekws.toolkit.train._streams import GRID as GRID
    from edgekws.toolkit.train._streams import VALIDATION_DECISION as VALIDATION_DECISION
    from edgekws.toolkit.train._streams import detect_features as detect_features
    from edgekws.toolkit.train._streams import mlperf_ratio as mlperf_ratio
    from edgekws.toolkit.train._streams import readout_traces as readout_traces
    from edgekws.toolkit.train._streams import score_stretches as score_stretches
    from edgekws.toolkit.train._streams import spans_of as spans_of
    from edgekws.toolkit.train._streams import stage_features as stage_features
    from edgekws.toolkit.train._streams import tune_detection as tune_detection
    from edgekws.toolkit.train._targets import FrameTargets as FrameTargets
    from edgekws.toolkit.train._targets import StreamLoss as StreamLoss
    from edgekws.toolkit.train._targets import frame_targets as frame_targets

__getattr__, __all__ = lazy_exports(
    __name__,
    {
        "bptt_loss_and_grad": "_bptt",
        "ConfigError": "_config",
        "TrainConfig": "_config",
        "BACKENDS": "_evaluate",
        "EvalError": "_evaluate",
        "evaluate": "_evaluate",
        "float_readout": "_evaluate",
        "plot_confusion": "_evaluate",
        "LossConfig": "_eventprop",
        "eventprop_loss_and_grad": "_eventprop",
        "TrainError": "_loop",
        "TrainResult": "_loop",
        "train": "_loop",
        "MergeError": "_merge",
        "merge_runs": "_merge",
        "MlgennError": "_mlgenn",
        "import_mlgenn": "_mlgenn",
        "SimOutput": "_model",
        "init_params": "_model",
        "simulate": "_model",
        "plot_curves": "_report",
        "plot_raster": "_report",
        "LoadedRun": "_run",
        "RunError": "_run",
        "latest_checkpoint": "_run",
        "load_run": "_run",
        "read_metrics": "_run",
        "read_run_info": "_run",
        "GRID": "_streams",
        "VALIDATION_DECISION": "_streams",
        "mlperf_ratio": "_streams",
        "detect_features": "_streams",
        "stage_features": "_streams",
        "readout_traces": "_streams",
        "score_stretches": "_streams",
        "spans_of": "_streams",
        "tune_detection": "_streams",
        "FrameTargets": "_targets",
        "StreamLoss": "_targets",
        "frame_targets": "_targets",
    },
)
