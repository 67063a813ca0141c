"""`edgekws-agent encode`: audio files to spikes through the front-end."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import numpy as np

from edgekws.agent._audio import AudioError, clipped_fraction, load_audio, prepare
from edgekws.agent._frontend import Frontend, FrontendSpec, FrontendSpecError
from edgekws.packaging import artifact_path


def _load_spec(path: str | None) -> FrontendSpec:
    if path is None:
        return FrontendSpec()
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise click.ClickException(f"{path}: cannot read a front-end spec ({exc})") from exc
    if isinstance(data, dict) and isinstance(data.get("frontend"), dict):
        data = data["frontend"]  # a bundle manifest (type edgekws.manifest): take its front-end spec
    try:
        return FrontendSpec.from_dict(data)
    except (FrontendSpecError, TypeError) as exc:
        raise click.ClickException(f"{path}: {exc}") from exc


@click.command()
@click.argument("audio", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=str))
@click.option(
    "--spec",
    "spec_path",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Front-end spec JSON (FrontendSpec.to_dict(), or a manifest with a 'frontend' key). "
    "Default: the project default spec.",
)
@click.option(
    "--resample/--no-resample",
    default=True,
    show_default=True,
    help="Resample audio at other rates to the spec's rate; with --no-resample such files fail.",
)
@click.option(
    "--out",
    "out_arg",
    type=click.Path(),
    default=None,
    help="Write the rasters to this .npz (or a folder, ending in / or existing, for AUDIO-NAME.npz, or "
    "spikes.npz for several files): spikes_0, spikes_1, ... ((steps, channels) uint8, in argument "
    "order), files, spec_json.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of a table.")
def encode(
    audio: tuple[str, ...], spec_path: str | None, resample: bool, out_arg: str | None, as_json: bool
) -> None:
    """Encode audio files to spikes and print steps, spike count and mean rate per file.

    Files at other sample rates are resampled to the spec's rate (16 kHz by default); stereo is
    averaged to mono. The mean rate is spikes per channel per second.

    Example:

        edgekws-agent encode speech.wav --json

        edgekws-agent encode a.wav b.flac --out spikes.npz
    """
    spec = _load_spec(spec_path)
    out: Path | None = None
    if out_arg is not None:
        try:
            out = artifact_path(out_arg, f"{Path(audio[0]).stem}.npz" if len(audio) == 1 else "spikes.npz")
        except ValueError as exc:
            raise click.ClickException(str(exc)) from exc
    results: list[dict[str, Any]] = []
    rasters: list[np.ndarray] = []
    problems: list[str] = []
    for path in _progress(audio, enabled=not as_json and len(audio) > 3):
        try:
            samples, sr = load_audio(path)
            whole = prepare(samples, sr, spec.sample_rate, resample_ok=resample)
            fe = Frontend(spec)
            raster = fe.process(whole)
        except AudioError as exc:
            message = str(exc) if path in str(exc) else f"{path}: {exc}"
            problems.append(message)
            continue
        seconds = raster.shape[0] * spec.dt_ms / 1000.0
        spikes = int(raster.sum(dtype=np.int64))
        results.append(
            {
                "file": path,
                "sample_rate": sr,
                "resampled": sr != spec.sample_rate,
                "duration_s": round(samples.size / sr, 6),
                "steps": int(raster.shape[0]),
                "channels": spec.num_channels,
                "spikes": spikes,
                "mean_rate_hz": round(spikes / (spec.num_channels * seconds), 3) if seconds else 0.0,
                "clipped_fraction": round(clipped_fraction(samples), 6),
            }
        )
        rasters.append(raster)
    if out is not None and rasters:
        arrays: dict[str, Any] = {f"spikes_{i}": r for i, r in enumerate(rasters)}
        arrays["files"] = np.array([r["file"] for r in results])
        arrays["spec_json"] = np.array(json.dumps(spec.to_dict()))
        with out.open("wb") as f:  # exactly this name (numpy would append .npz to a path without it)
            np.savez_compressed(f, **arrays)
    if as_json:
        doc = {"spec": spec.to_dict(), "files": results, "errors": problems}
        if out is not None:
            doc["out"] = str(out)
        click.echo(json.dumps(doc, indent=2))
    else:
        for r in results:
            click.echo(
                f"{r['file']}: {r['steps']} steps x {r['channels']} channels, {r['spikes']} spikes, "
                f"mean rate {r['mean_rate_hz']:.1f} Hz"
                + (f", resampled from {r['sample_rate']} Hz" if r["resampled"] else "")
                + (f", {100 * r['clipped_fraction']:.2f}% clipped" if r["clipped_fraction"] else "")
            )
        if out is not None and rasters:
            click.echo(f"wrote {out}")
    if problems:
        raise click.ClickException(
            f"{len(problems)} of {len(audio)} file(s) failed:\n  " + "\n  ".join(problems)
        )


def _progress(items: tuple[str, ...], *, enabled: bool) -> Any:
    if not enabled:
        yield from items
        return
    from rich.progress import Progress

    with Progress(transient=True) as progress:
        task = progress.add_task("encoding", total=len(items))
        for item in items:
            yield item
            progress.advance(task)
