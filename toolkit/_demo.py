"""`edgekws demo`: the main job, end to end on embedded defaults, every stage's output in one run folder.

Stages: synthesize a spoken-digit corpus with espeak-ng → encode it with the agent's front-end → train the
recurrent SNN with Eventprop → evaluate float and fixed point → quantize, export, pack and sign a bundle →
train the always-on model on stretches of the corpus (from the clip model) and bundle it → classify held-out
audio with `edgekws-agent` through the clip bundle → stream held-out speech in real time through the agent
daemon serving the clip model on one never-reset network (sliding windows), which reports detections,
latency and energy over MQTT to the fleet monitor, and score the clip model in K lanes and the stream-trained
always-on model on the same stream (:mod:`edgekws.toolkit._demo_live`) → write an HTML report with plots.
"""

from __future__ import annotations

import base64
import html
import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import click
import numpy as np

from edgekws.packaging import atomic_write_text
from edgekws.toolkit._progress import progress_bar

DEMO_TASK = "en-digits"  # zero..nine, _unknown_, _silence_
# The reference bundles' corpus engines (round 4's, benchmarks/research/recipe_en_digits_round4.toml; bundle
# 4.0.0 trains on it with BPTT, the demo with Eventprop): espeak-ng, flite, festival and hibari's neural
# voice, which says 2 of every 5 training utterances (it has no test voices)
DEMO_ENGINES = ("espeak-ng", "flite", "festival", "hibari")
DEMO_ENGINE_WEIGHTS = {"hibari": 2.0}
DEMO_PER_CLASS = 120  # utterances per class: 1440 clips
DEMO_EPOCHS = 30
# The en-digits reference recipe's augmentations over the `default` policy (benchmarks/research/
# recipe_en_digits.toml; docs/training.md, "Hearing people"): every second clip telephone-band, levels down to
# about -40 dBFS peak, a simulated room on every second clip, lighter voice and noise draws.
DEMO_AUGMENT = {
    "band_p": 0.5,
    "band_rates": [8000],
    "gain_p": 0.8,
    "gain_db": [-32.0, 0.0],
    "room_p": 0.5,
    "formant_p": 0.3,
    "pitch_p": 0.3,
    "pitch_semitones": [-3.0, 3.0],
    "tempo_p": 0.3,
    "eq_p": 0.0,
    "clip_p": 0.0,
    "snr_db": [10.0, 40.0],
    "noise_weights": [1.0, 1.0, 0.0],
}
# No spike-level band shift (benchmarks/research/recipe_en_digits_round3.toml: the shift cost FSDD 11 points).
DEMO_SPIKE_AUGMENT = "none"
DEMO_HIDDEN = 256
DEMO_SEED = 0
DEMO_CLASSIFY_FILES = 60  # held-out WAVs streamed through the agent
# The corpus has the filler classes _unknown_ and _silence_, and training delays samples by up to 300 ms, so
# that the streaming agent of stage 6 meets words anywhere in its windows and learns what is not a keyword:
# on 3-minute test streams that cut the false accepts at the agent's default settings from 91 to 35 (none
# left in background noise) for 18 instead of 20 keywords found of 34 (docs/agent.md).
DEMO_TIME_SHIFT_MS = 300.0
# The always-on model: the clip model's weights trained further on stretches of the same corpus (its train
# split's keywords and _unknown_ words, silence and noise), never reset (docs/training.md, "Stream training").
DEMO_STRETCHES = {"train": 48, "val": 8}
DEMO_STRETCH_S = 20.0
DEMO_STREAM_EPOCHS = 8


def demo_key(folder: Path) -> Any:
    """The demo's signing key in ``folder``: made on the first run, the same one on every rerun into the same
    run folder (so the bundles and the device's trust list stay in step); a ``demo.pub`` that is not the
    ``demo.key``'s public half is refused with what to do."""
    from edgekws.packaging import KeyFileError, load_private_key, write_keypair

    private, public = folder / "demo.key", folder / "demo.pub"
    if not (private.exists() or public.exists()):
        return write_keypair(folder, "demo")
    if not (private.is_file() and public.is_file()):
        raise KeyFileError(
            f"{folder} holds only one of demo.key and demo.pub: remove it or give another --out"
        )
    key = load_private_key(private)
    if public.read_bytes() != key.public_key.to_pem():
        raise KeyFileError(
            f"{public} is not the public half of {private}: remove {folder} or give another --out"
        )
    return key


def _stage(number: int, title: str) -> None:
    click.secho(f"\n== {number}. {title}", bold=True, err=True)


def run_demo(
    out: Path,
    per_class: int = DEMO_PER_CLASS,
    epochs: int = DEMO_EPOCHS,
    hidden: int = DEMO_HIDDEN,
    seed: int = DEMO_SEED,
    broker: str | None = None,
) -> dict[str, Any]:
    """Run every stage into ``out`` and return the summary that is also written to ``out/summary.json``."""
    from edgekws.toolkit._bundle_build import build_run_bundle
    from edgekws.toolkit._demo_live import agent_exe, run_live_stage
    from edgekws.toolkit.data import format_info, info, read_shd, synthesize
    from edgekws.toolkit.train import (
        TrainConfig,
        evaluate,
        load_run,
        plot_confusion,
        plot_curves,
        plot_raster,
        train,
    )

    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"run": str(out), "stages": {}}
    started = time.perf_counter()

    def timed(name: str, t0: float, **fields: Any) -> None:
        summary["stages"][name] = {"seconds": round(time.perf_counter() - t0, 1), **fields}

    _stage(
        1,
        f"synthesize spoken digits with espeak-ng, flite, festival and hibari ({per_class} per class, plus "
        "fillers), augment and encode them",
    )
    corpus = out / "data"
    t0 = time.perf_counter()
    with progress_bar("synth digits") as update:
        manifest = synthesize(
            corpus, DEMO_TASK, per_class, seed, force=True, progress=update, augment=DEMO_AUGMENT,
            engines=DEMO_ENGINES, engine_weights=DEMO_ENGINE_WEIGHTS,
        )  # fmt: skip
    described = info(corpus)
    click.echo(format_info(described))
    atomic_write_text(out / "data_info.json", json.dumps(described, indent=2) + "\n")
    timed("synth", t0, utterances=len(manifest["utterances"]), splits=manifest["splits"])

    n_classes = len(manifest["classes"])
    _stage(
        2, f"train {manifest['frontend']['num_channels']} → {hidden} recurrent → {n_classes} with Eventprop"
    )
    t0 = time.perf_counter()
    run_dir = out / "train"
    shutil.rmtree(run_dir, ignore_errors=True)
    config = TrainConfig(
        hidden=(hidden,),
        epochs=epochs,
        seed=seed,
        silent_boost=0.02,
        augment=DEMO_SPIKE_AUGMENT,
        time_shift_ms=DEMO_TIME_SHIFT_MS,
    )
    train_set, val_set, test_set = (read_shd(corpus / f"{s}.h5") for s in ("train", "val", "test"))
    result = train(
        train_set,
        run_dir,
        config,
        val_data=val_set,
        data_paths={"train": corpus / "train.h5", "val": corpus / "val.h5"},
    )
    timed("train", t0, best_epoch=result.best_epoch, epochs=epochs)

    _stage(3, "evaluate on unseen test voices: float model and the Loihi 2 fixed-point emulator")
    t0 = time.perf_counter()
    run = load_run(run_dir)
    metrics = {b: evaluate(run, test_set, backend=b) for b in ("float", "emulator")}
    plots = {"curves": plot_curves(run_dir, out / "curves.png")}
    for b, m in metrics.items():
        plots[f"confusion_{b}"] = plot_confusion(
            m["confusion_matrix"], m["class_names"], out / f"confusion_{b}.png", f"{b}: {m['accuracy']:.1%}"
        )
        click.echo(f"{b:>9}: test accuracy {m['accuracy']:.1%} on {m['samples']} samples")
    plots["raster"] = plot_raster(run, test_set, 0, out / "raster.png")
    atomic_write_text(out / "eval.json", json.dumps(metrics, indent=2) + "\n")
    timed("eval", t0, accuracy={b: round(m["accuracy"], 4) for b, m in metrics.items()})

    _stage(4, "quantize, export (NetX, ONNX, NIR), pack and sign the bundle")
    t0 = time.perf_counter()
    key = demo_key(out / "keys")
    bundle_path = build_run_bundle(
        run_dir, "digits", "1.0.0", out / "keys" / "demo.key", out / "digits-1.0.0.ekb", force=True
    ).path
    click.echo(f"bundle {bundle_path} ({bundle_path.stat().st_size} bytes), key id {key.key_id}")
    timed("bundle", t0, bytes=bundle_path.stat().st_size, key_id=key.key_id)

    test_utts = [u for u in manifest["utterances"] if u["split"] == "test"]
    rng = np.random.default_rng(seed)
    chosen = [test_utts[i] for i in rng.permutation(len(test_utts))[:DEMO_CLASSIFY_FILES]]
    _stage(5, "train the always-on model on stretches of the corpus (one network, never reset) and bundle it")
    t0 = time.perf_counter()
    always_on = _always_on_model(out, corpus, run_dir, hidden, seed)
    click.echo(
        f"always-on bundle {always_on['bundle'].name}: decision settings {always_on['settings']}, validation "
        f"recall {always_on['tune_recall']:.2f} at {always_on['tune_fa_per_hour']:.0f} false accepts/h"
    )
    timed("always_on", t0, **{k: v for k, v in always_on.items() if k != "bundle"})

    _stage(6, f"classify {len(chosen)} held-out recordings with edgekws-agent (emulator backend)")
    t0 = time.perf_counter()
    agent = agent_exe()
    command = [
        agent,
        "classify",
        "--bundle",
        str(bundle_path),
        "--trust",
        str(out / "keys" / "demo.pub"),
    ]
    command += ["--json", *(str(corpus / u["wav"]) for u in chosen)]
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise click.ClickException(f"edgekws-agent classify failed:\n{proc.stderr}")
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    correct = sum(r["label"] == u["class"] for r, u in zip(rows, chosen, strict=True))
    latencies = np.array([r["latency_ms"] for r in rows])
    atomic_write_text(out / "agent_classify.jsonl", proc.stdout)
    plots["latency"] = _latency_histogram(latencies, out / "latency.png")
    click.echo(
        f"agent: {correct}/{len(rows)} correct, latency p50 {np.median(latencies):.1f} ms, "
        f"p95 {np.percentile(latencies, 95):.1f} ms per 1 s recording"
    )
    timed(
        "agent",
        t0,
        files=len(rows),
        accuracy=round(correct / len(rows), 4),
        latency_ms_p50=round(float(np.median(latencies)), 2),
        latency_ms_p95=round(float(np.percentile(latencies, 95)), 2),
    )

    _stage(
        7,
        "stream held-out speech through the agent daemon (the clip model on one never-reset network: sliding "
        "windows), reporting to the fleet monitor over MQTT; on the same stream, the clip model in K lanes "
        "and the stream-trained always-on model",
    )
    t0 = time.perf_counter()
    trust = out / "keys" / "demo.pub"
    others = [(bundle_path, "lanes"), (always_on["bundle"], "auto")]
    live = run_live_stage(out, corpus, bundle_path, trust, seed, broker, mode="sliding", compare=others)
    summary["live"] = live.summary
    plots.update(live.plots)
    timed("live", t0)

    summary["seconds"] = round(time.perf_counter() - started, 1)
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    _write_report(out / "report.html", summary, plots)
    return summary


def _always_on_model(out: Path, corpus: Path, clip_run: Path, hidden: int, seed: int) -> dict[str, Any]:
    """Stretches of the corpus, the clip run's network trained further on them, and its signed bundle."""
    from edgekws.toolkit._bundle_build import build_run_bundle
    from edgekws.toolkit._progress import progress_bar
    from edgekws.toolkit.data import StretchPlan, corpus_pools, make_stretches, read_shd
    from edgekws.toolkit.train import TrainConfig, train

    manifest = json.loads((corpus / "manifest.json").read_text())
    keywords = [c["name"] for c in manifest["classes"] if not c["name"].startswith("_")]
    data = out / "stretches"
    pools = {split: corpus_pools(corpus, split, "unknown") for split in DEMO_STRETCHES}
    with progress_bar("stretches") as update:
        made = make_stretches(
            data,
            pools,
            keywords,
            manifest["frontend"],
            DEMO_STRETCHES,
            StretchPlan(seconds=DEMO_STRETCH_S),
            seed,
            sources={"corpus": str(corpus)},
            force=True,
            progress=lambda split, done, total: update(done, total),
        )
    run_dir = out / "train_always_on"
    shutil.rmtree(run_dir, ignore_errors=True)
    config = TrainConfig(
        hidden=(hidden,),
        epochs=DEMO_STREAM_EPOCHS,
        batch_size=8,
        seed=seed,
        learning_rate=5e-4,
        ease_in=False,
        silent_boost=0.02,
        init_from=str(out / "train"),
    )
    result = train(
        read_shd(data / "train.h5"),
        run_dir,
        config,
        val_data=read_shd(data / "val.h5"),
        data_paths={"train": data / "train.h5", "val": data / "val.h5"},
    )
    built = build_run_bundle(
        run_dir, "digits-always-on", "1.0.0", out / "keys" / "demo.key", out / "digits-always-on-1.0.0.ekb",
        force=True,
    )  # fmt: skip
    det, fixed = built.manifest["detection"], built.manifest["metrics"]["fixed_point"]
    return {
        "bundle": built.path,
        "stretches": {k: v["stretches"] for k, v in made["splits"].items()},
        "stretch_seconds": DEMO_STRETCH_S,
        "epochs": DEMO_STREAM_EPOCHS,
        "best_epoch": result.best_epoch,
        "settings": {k: det[k] for k in ("smoothing_ms", "threshold", "min_margin", "refractory_ms")},
        "tune_recall": round(float(fixed.get("tune_recall", 0.0)), 4),
        "tune_fa_per_hour": round(float(fixed.get("tune_false_accepts_per_hour", 0.0)), 1),
    }


def _latency_histogram(latencies: np.ndarray, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist(latencies, bins=30)
    ax.set_xlabel("front-end + emulator + decision per 1 s recording (ms)")
    ax.set_ylabel("recordings")
    ax.set_title("edgekws-agent classify latency")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _headline(summary: dict[str, Any]) -> list[tuple[str, str]]:
    """The numbers a reader looks for first, as (what, value) rows."""
    st = summary["stages"]
    rows = [
        ("corpus", f"{st['synth']['utterances']} utterances, splits {st['synth']['splits']}"),
        ("training", f"{st['train']['epochs']} Eventprop epochs, best epoch {st['train']['best_epoch']}"),
        (
            "test accuracy (unseen voices)",
            ", ".join(f"{b} {a:.1%}" for b, a in st["eval"]["accuracy"].items()),
        ),
        ("bundle", f"{st['bundle']['bytes']} bytes, signed by key {st['bundle']['key_id']}"),
        (
            "agent classify (one decision per file)",
            f"{st['agent']['accuracy']:.1%} of {st['agent']['files']} files, latency p50 "
            f"{st['agent']['latency_ms_p50']} ms per 1 s recording",
        ),
    ]
    if "always_on" in st:
        a = st["always_on"]
        rows.append(
            (
                "always-on model (stream training)",
                f"{a['epochs']} epochs on {a['stretches']['train']} stretches of "
                f"{a['stretch_seconds']:.0f} s from the clip model, best epoch {a['best_epoch']}; decision "
                f"settings {a['settings']} tuned on {a['stretches']['val']} validation stretches (recall "
                f"{a['tune_recall']:.2f} at {a['tune_fa_per_hour']:.0f} false accepts/h)",
            )
        )
    live = summary.get("live")
    if live:
        sc, mon = live["score"], live["monitor"]
        agent = live["agent"]
        per_s = agent.get("energy_mj_per_audio_s", {}).get("estimated:loihi2-opcount")
        rows.append(
            (
                f"live stream, {agent.get('detection_mode') or 'agent'} (daemon, real time)",
                f"{sc['hits']}/{sc['keywords']} keywords detected, {sc['false_accepts']} false accepts "
                f"({sc['wrong_label']} wrong label, {sc['spurious']} on other words or noise) in "
                f"{live['stream']['duration_s']} s; detection p50 {sc['latency_ms']['p50']} ms after the "
                f"keyword's end; backend work {agent.get('work_per_audio_s')} per audio second"
                + (f", {per_s:.4g} mJ per audio second (estimated:loihi2-opcount)" if per_s else ""),
            )
        )
        for c in live.get("compare", []):
            cs = c["score"]
            rows.append(
                (
                    f"same stream, {c['mode']} ({c['bundle']}, offline)",
                    f"{cs['hits']}/{cs['keywords']} keywords detected, {cs['false_accepts']} false accepts; "
                    f"detection p50 {cs['latency_ms']['p50']} ms; backend work {c['work_per_audio_s']} per "
                    f"audio second, {c['loihi2_opcount_mj_per_audio_s']:.4g} mJ per audio second "
                    "(estimated:loihi2-opcount)",
                )
            )
        rows.append(
            (
                "fleet monitor received",
                f"{mon['received']['detection']} of {live['agent']['detections_logged']} detections, "
                f"{mon['received']['telemetry']} telemetry reports",
            )
        )
        energy = live["agent"].get("energy_mj_per_inference") or {}
        rows.append(
            (
                "energy per inference (agent telemetry, mean over reports)",
                ", ".join(f"{v:.4g} mJ {m}" for m, v in energy.items()) or "no reading",
            )
        )
        dev = mon["device"] or {}
        rows.append(
            (
                "device as the monitor shows it",
                f"backend {dev.get('backend')}, inference latency (backend call per 20 ms of audio) p50 "
                f"{dev.get('latency_p50_ms')} ms / p95 {dev.get('latency_p95_ms')} ms, energy "
                f"{dev.get('energy_mj')} mJ per inference ({dev.get('energy_method')})",
            )
        )
    rows.append(("total time", f"{summary.get('seconds')} s"))
    return rows


def _write_report(path: Path, summary: dict[str, Any], plots: dict[str, Path | None]) -> None:
    """One self-contained HTML page: headline numbers, every plot inlined, the full stage summary."""
    table = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in _headline(summary)
    )
    figures = "".join(
        f'<figure><img src="data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}" '
        f'alt="{html.escape(name)}"><figcaption>{html.escape(name)}</figcaption></figure>'
        for name, p in plots.items()
        if p is not None
    )
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>edgekws demo report</title>"
        "<style>body{font-family:sans-serif;margin:2em}figure{display:inline-block;margin:1em}"
        "img{max-width:900px}pre{background:#f4f4f4;padding:1em}th{text-align:left;padding-right:1em}"
        "td,th{border-bottom:1px solid #ddd;padding:.3em}</style></head><body>"
        f"<h1>edgekws demo</h1><table>{table}</table>{figures}"
        f"<h2>every stage</h2><pre>{html.escape(json.dumps(summary, indent=2))}</pre></body></html>"
    )
    path.write_text(page)


@click.command()
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs/demo"), show_default=True,
              help="Run folder: every stage writes its output here.")  # fmt: skip
@click.option("--per-class", type=click.IntRange(min=5), default=DEMO_PER_CLASS, show_default=True,
              help="Utterances per class in the demo corpus.")  # fmt: skip
@click.option("--epochs", type=click.IntRange(min=1), default=DEMO_EPOCHS, show_default=True,
              help="Training epochs.")  # fmt: skip
@click.option("--hidden", type=click.IntRange(min=1), default=DEMO_HIDDEN, show_default=True,
              help="Recurrent hidden neurons.")  # fmt: skip
@click.option("--seed", type=int, default=DEMO_SEED, show_default=True, help="Seed for every stage.")
@click.option("--broker", default=None,
              help="A running broker (mqtt://host:port) to use instead of a local mosquitto.")  # fmt: skip
def demo(out: Path, per_class: int, epochs: int, hidden: int, seed: int, broker: str | None) -> None:
    """Run the whole pipeline on embedded defaults.

    Synthesizes a spoken-digit corpus with espeak-ng, encodes it with the agent's front-end, trains the
    network with Eventprop, evaluates float and fixed point on unseen voices, builds and signs a bundle,
    classifies held-out recordings with edgekws-agent, then runs a local mosquitto, the fleet monitor and
    the agent daemon on a real-time stream of held-out speech, and writes OUT/report.html.

    Example:

        edgekws demo --out runs/demo

        edgekws demo --out runs/demo --broker mqtt://127.0.0.1:1883
    """
    summary = run_demo(out, per_class, epochs, hidden, seed, broker)
    click.secho(
        f"\ndemo finished in {summary['seconds']} s; report: {out / 'report.html'}", bold=True, err=True
    )
