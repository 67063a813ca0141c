"""`edgekws-agent run` and `edgekws-agent classify`: the daemon and one-shot classification of files."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import click

from edgekws.agent._config import ConfigError, load_config
from edgekws.agent.backends import backend_classes, backend_names


@click.command()
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The agent's TOML config (see deploy/agent.example.toml).",
)
@click.option(
    "--validate-config",
    is_flag=True,
    help="Only check the config and the files it names (keys, store, outbox, audio, TLS): print every "
    "problem with its line and fix; exit 0 if valid, else 1.",
)
def run(config_path: Path, validate_config: bool) -> None:
    """Run the agent: audio in, keyword detections and telemetry out (JSON logs on stderr).

    SIGTERM or SIGINT stop it cleanly; SIGHUP reloads the config and the active bundle. Under
    systemd (Type=notify) it reports READY=1, STOPPING=1 and pings the watchdog.

    Example:

        edgekws-agent run --config /etc/edgekws/agent.toml

        edgekws-agent run --config agent.toml --validate-config
    """
    if validate_config:
        try:
            cfg = load_config(config_path, check_files=True)
        except ConfigError as exc:
            click.echo(str(exc), err=True)
            sys.exit(1)
        click.echo(
            f"{config_path}: valid (device {cfg.device.id}, source {cfg.source.type}, "
            f"backends {', '.join(b.type for b in cfg.backends)})"
        )
        return
    from edgekws.agent._daemon import Agent
    from edgekws.agent._device_store import StoreError
    from edgekws.agent._pipeline import NoBackend
    from edgekws.agent._sources import SourceError

    agent = Agent(config_path)
    agent.install_signal_handlers()
    try:
        code = agent.run()
    except (ConfigError, NoBackend, StoreError, SourceError) as exc:
        raise click.ClickException(str(exc)) from exc
    except OSError as exc:  # an unwritable or full outbox, store or log folder: say so, no traceback
        raise click.ClickException(f"{exc}; check that the folders in the config are writable") from exc
    sys.exit(code)


@click.command()
@click.option(
    "--bundle",
    "bundle_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A signed bundle (.ekb).",
)
@click.option(
    "--trust",
    "trust",
    required=True,
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="A trusted Ed25519 public key file (repeatable); the bundle must be signed by one of them.",
)
@click.argument("audio", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=str))
@click.option(
    "--backend",
    "backends",
    multiple=True,
    type=click.Choice(backend_names()),
    help="Backend to use (repeatable: tried in order). Default: emulator.",
)
@click.option(
    "--json", "as_json", is_flag=True, help="One JSON object per file (file, label, confidence, latency_ms)."
)
def classify(
    bundle_path: Path,
    trust: tuple[str, ...],
    audio: tuple[str, ...],
    backends: tuple[str, ...],
    as_json: bool,
) -> None:
    """Classify audio files with a bundle: one decision per file, through the daemon's front-end and backend.

    Each file is encoded by the bundle's front-end, cut or zero-padded to the network's window
    (1 s by default, as in training), run from zero state and scored with the same decision rule.
    latency_ms is the wall time of front-end + backend + decision for the file. A window that holds
    no speech (empty, silent, a DC offset: below -65 dBFS above 100 Hz) gets label null and
    `no_speech` with the reason instead of a keyword. Clipped samples and a recording longer than the
    window are noted on standard error.

    Example:

        edgekws-agent classify --bundle kws-1.0.0.ekb --trust release.pub yes.wav no.wav --json
    """
    from edgekws.agent._audio import AudioError, clipped_fraction, load_audio, no_speech_reason, prepare
    from edgekws.agent._pipeline import NoBackend, Pipeline
    from edgekws.packaging import InvalidBundle, open_bundle

    configs = [backend_classes()[b].Config(type=b) for b in backends or ("emulator",)]
    try:
        pipeline = Pipeline.open(open_bundle(bundle_path, list(trust), check_model=True), configs)
    except (InvalidBundle, NoBackend) as exc:
        raise click.ClickException(str(exc)) from exc
    problems: list[str] = []
    with contextlib.closing(pipeline):
        if pipeline.detection.mode == "always_on":
            raise click.ClickException(
                f"{bundle_path}: the model was trained on streams (always_on) and has no per-file decision; "
                "stream the files with `edgekws-agent run` (a [source] of type wav) to get their detections"
            )
        for path in audio:
            try:
                samples, sr = load_audio(path)
                whole = prepare(samples, sr, pipeline.frontend_spec.sample_rate, resample_ok=True)
            except AudioError as exc:
                problems.append(str(exc) if path in str(exc) else f"{path}: {exc}")
                continue
            rate = pipeline.frontend_spec.sample_rate
            window = pipeline.steps * pipeline.frontend_spec.samples_per_step
            _notes(path, len(whole) / rate, window / rate, clipped_fraction(samples))
            t0 = time.perf_counter()
            silent = no_speech_reason(samples[: int(sr * window / rate)], sr)  # the scored part, as recorded
            label, confidence = (None, 0.0) if silent else pipeline.classify(whole)
            latency_ms = (time.perf_counter() - t0) * 1e3
            name = pipeline.backend_name
            row: dict[str, Any] = {
                "file": path,
                "label": label,
                "confidence": round(confidence, 6),
                "latency_ms": round(latency_ms, 3),
                "backend": name,
            }
            if silent:
                row["no_speech"] = silent
                text = f"{path}: no speech ({silent})"
            else:
                text = f"{path}: {label} ({confidence:.3f}, {row['latency_ms']:.1f} ms, {name})"
            click.echo(json.dumps(row) if as_json else text)
    if problems:
        raise click.ClickException(
            f"{len(problems)} of {len(audio)} file(s) failed:\n  " + "\n  ".join(problems)
        )


def _notes(path: str, seconds: float, window_s: float, clipped: float) -> None:
    """What the decision does not show, on standard error: clipping, and audio beyond the window."""
    if clipped >= 0.001:
        click.echo(f"{path}: note: {100 * clipped:.1f} % of the samples are clipped at full scale", err=True)
    if seconds > window_s + 1e-9:
        click.echo(
            f"{path}: note: only the first {window_s:g} s of {seconds:.1f} s are scored (the window)",
            err=True,
        )
