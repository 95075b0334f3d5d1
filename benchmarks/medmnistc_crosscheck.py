"""Cross-check scopelite's corruption suite against the MedMNIST-C blood protocol.

MedMNIST-C (Di Salvo et al., 2024; ``pip install medmnistc``) defines, for BloodMNIST,
pixelate, jpeg_compression, defocus_blur, motion_blur, brightness_up/down,
contrast_up/down, saturate, stain_deposit and bubble at 5 severities. It pulls in
torch, torchvision and ImageMagick (Wand), so it is never a scopelite dependency:
this script runs it in a separate Python environment of its own, as a subprocess,
and does everything else with scopelite.

    # once: a separate environment for medmnistc (ImageMagick from Debian for Wand)
    apt-get install -y imagemagick libmagickwand-dev
    python3 -m venv ~/mcvenv && ~/mcvenv/bin/pip install "numpy<2" medmnistc torch torchvision

    # from the scopelite environment: the models, our own bench.json of them, and the medmnistc Python
    python benchmarks/medmnistc_crosscheck.py run RUN/model.keras RUN/c/model_int8.tflite RUN/c/model_qat_int8.tflite \\
        --ours RUN/bench/bench.json --medmnistc-python ~/mcvenv/bin/python --out RUN/bench-medmnistc

It evaluates the models on the same test images as ``cellcompress bench`` (same
``--limit`` and ``--seed``), corrupted by MedMNIST-C instead of by scopelite, writes
bench.{json,csv,md,png} for that suite, and ``crosscheck.{json,md}``: how both suites
rank the models (Kendall tau, pairwise order agreement) and both suites' accuracy on
the corruptions they share.

MedMNIST-C's BloodMNIST parameters are set for 224x224 images: each 96x96 crop is
upsampled to 224 (bicubic), corrupted, and brought back to the model's input with the
device's own preprocessing (scopelite.edge.preprocess.prepare).

With ``--fields DIR`` it runs the native protocol instead (``cellcompress bench --protocol
native``; docs/robustness.md): whole fields, class folders, each resampled from its own
magnification (the red-cell ruler) to the one MedMNIST-C's parameters were set at (BloodMNIST's
224 px images are whole PBC fields, red cells ``RBC_PX_AT_224`` px across), corrupted there, put
back to the camera's resolution and classified by field mode with default options. Clean fields
go through the same resampling. ``--ours`` is then the native.json of ``cellcompress bench
--protocol native`` on the same fields, models, ``--limit`` and ``--seed``:

    python benchmarks/medmnistc_crosscheck.py run edge/models/bloodcell_int8.tflite NEW.tflite \\
        --fields ../shared/data/pbc-fields --ours bench/native.json --medmnistc-python ~/mcvenv/bin/python \\
        --out bench-medmnistc-native
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

PROTOCOL_SIZE = 224
# our corruption that measures the same thing as theirs (where one does)
SHARED = {"pixelate": "pixelate", "jpeg_compression": "jpeg", "defocus_blur": "defocus_blur",
          "motion_blur": "motion_blur", "brightness_up": "brightness_up", "brightness_down": "brightness_down",
          "contrast_up": "contrast_up", "contrast_down": "contrast_down", "saturate": "saturate",
          "bubble": "bubbles"}
# theirs with no counterpart in our suite: opaque black ink marks up to a fifth of the crop
UNMATCHED = {"stain_deposit": "debris (small grey specks) is the closest"}
# the native protocols (whole fields): ours (scopelite.train.native_corruptions) against theirs
NATIVE_SHARED = {"pixelate": "pixelate", "defocus_blur": "defocus_blur", "motion_blur": "motion_blur",
                 "bubble": "bubbles", "stain_deposit": "stain_deposit"}
# BloodMNIST's 224 px images are whole PBC fields (360x363) resized: red cells 68.2 px across in the
# 160 pbc-fields (median, scopelite.edge.scale: native-debris.json) x 224 / 360
RBC_PX_AT_224 = 42.4


def corrupt(src: str, dst: str, seed: int, native: bool = False) -> None:
    """Runs in the medmnistc environment: every bloodmnist corruption x severity of ``src``'s images.

    ``native``: ``src`` holds whole fields of any size (keys 0, 1, ...) already at BloodMNIST's scale,
    each corrupted as it is (keys ``name/severity/i``); else 96 px crops, upsampled to 224 first.
    """
    import random

    from PIL import Image
    from medmnistc.corruptions.registry import CORRUPTIONS_DS

    with np.load(src, allow_pickle=False) as z:
        images = [z[str(i)] for i in range(len(z.files))] if native else z["images"]
    out = {}
    for name, corruption in CORRUPTIONS_DS["bloodmnist"].items():
        for sev in range(5):
            random.seed(seed)
            np.random.seed(seed)
            batch = []
            for img in images:
                big = Image.fromarray(img)
                if not native:
                    big = big.resize((PROTOCOL_SIZE, PROTOCOL_SIZE), Image.BICUBIC)
                batch.append(np.asarray(corruption.apply(big, severity=sev))[..., :3].astype(np.uint8))
            if native:
                out.update({f"{name}/{sev + 1}/{i}": b for i, b in enumerate(batch)})
            else:
                out[f"{name}/{sev + 1}"] = np.stack(batch)
            print(f"{name}/{sev + 1}", flush=True)
    np.savez_compressed(dst, **out)


def run_native(args) -> None:
    """The native protocol: whole fields at BloodMNIST's scale for MedMNIST-C, field mode at the camera's."""
    import cv2

    from scopelite.compress.native import bench_native, load_fields
    from scopelite.edge.bundle import load_sidecar

    fs = load_fields(args.fields, load_sidecar(args.models[0]).labels, args.limit, args.seed)
    f = RBC_PX_AT_224 / fs.rbc_px
    small = [cv2.resize(im, (max(int(round(im.shape[1] * f)), 1), max(int(round(im.shape[0] * f)), 1)),
                        interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_CUBIC) for im in fs.images]

    def back(images):
        return [cv2.resize(sm, im.shape[1::-1], interpolation=cv2.INTER_CUBIC) for sm, im in zip(images, fs.images)]

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "clean.npz", Path(tmp) / "medmnistc.npz"
        np.savez(src, **{str(i): im for i, im in enumerate(small)})
        subprocess.run([args.medmnistc_python, __file__, "corrupt", str(src), str(dst), "--seed", str(args.seed),
                        "--native"], check=True, stdout=subprocess.DEVNULL)
        with np.load(dst, allow_pickle=False) as z:
            names = list(dict.fromkeys(k.split("/")[0] for k in z.files))  # the registry's order
            theirs = bench_native(args.models, fs, args.out, seed=args.seed, corruptions=names,
                                  corrupt=lambda ims, c, s: back([z[f"{c}/{s}/{i}"] for i in range(len(ims))]),
                                  clean=lambda ims: back(small), stem="bench",
                                  suite="MedMNIST-C bloodmnist, whole fields at its scale")
    compare(json.loads(Path(args.ours).read_text()), theirs, Path(args.out),
            f"native: whole fields ({fs.description}, red cells {fs.rbc_px:.1f} px) resampled x{f:.3f} to "
            f"BloodMNIST's scale (red cells {RBC_PX_AT_224} px), corrupted by medmnistc bloodmnist, resampled back "
            "(clean fields too) and classified by field mode with default options", shared=NATIVE_SHARED,
            unmatched={})


def run(args) -> None:
    if args.fields:
        return run_native(args)
    from scopelite.compress.bench import Suite, bench, select_test
    from scopelite.edge.bundle import load_sidecar
    from scopelite.edge.preprocess import prepare

    spec = load_sidecar(args.models[0]).input
    size = (spec.width, spec.height)
    selected = select_test(args.models, args.limit, args.seed, args.data)
    test = selected[0]
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "clean.npz", Path(tmp) / "medmnistc.npz"
        np.savez(src, images=test.images)
        subprocess.run([args.medmnistc_python, __file__, "corrupt", str(src), str(dst), "--seed", str(args.seed)],
                       check=True, stdout=subprocess.DEVNULL)
        with np.load(dst, allow_pickle=False) as z:
            sets = {k: np.stack([prepare(im, spec) for im in z[k]]) for k in z.files}
    names = list(dict.fromkeys(k.split("/")[0] for k in sets))  # the registry's order

    def apply(x, c, s):
        assert len(x) == len(sets[f"{c}/{s}"]), "the test subset changed between selection and evaluation"
        return sets[f"{c}/{s}"]

    theirs = bench(args.models, args.out, limit=args.limit, seed=args.seed, data=args.data,
                   suite=Suite("MedMNIST-C bloodmnist", names, (1, 2, 3, 4, 5), apply), selected=selected)
    compare(json.loads(Path(args.ours).read_text()), theirs, Path(args.out),
            f"medmnistc bloodmnist, crops upsampled to {PROTOCOL_SIZE} px, corrupted, resized to "
            f"{size[0]}x{size[1]} by scopelite.edge.preprocess.prepare")


def compare(ours: dict, theirs: dict, out: Path, protocol: str, shared: dict | None = None,
            unmatched: dict | None = None) -> dict:
    """How the two suites' bench results rank the same models; write crosscheck.{json,md} into ``out``.

    ``shared``: their corruption -> ours that measures the same (default ``SHARED``, the crop suites);
    ``unmatched``: theirs with no counterpart, and why (default ``UNMATCHED``)."""
    shared_names = SHARED if shared is None else shared
    unmatched_names = UNMATCHED if unmatched is None else unmatched
    from scopelite.compress.bench import rank_agreement
    from scopelite.edge.bundle import write_bytes_atomic, write_json_atomic
    from scopelite.edge.sysinfo import machine

    if ours["images"] != theirs["images"] or ours["seed"] != theirs["seed"]:
        sys.exit(f"our bench was measured on {ours['images']} images with seed {ours['seed']}, theirs on "
                 f"{theirs['images']} with seed {theirs['seed']}: run both with the same --limit and --seed")
    ours_c = ours.get("corruptions") or list(next(iter(ours["models"].values()))["per_corruption"])
    names = theirs["corruptions"]
    common = [m for m in theirs["models"] if m in ours["models"]]
    if len(common) < 2:
        print(f"only {len(common)} model(s) in both benches: nothing to rank; the MedMNIST-C bench is in {out}",
              file=sys.stderr)
        return {}
    score = {s: {m: r["models"][m]["mean_corrupted"] for m in common} for s, r in (("ours", ours), ("theirs", theirs))}
    pairs = [(t, o) for t, o in shared_names.items() if t in names and o in ours_c]
    shared = {"ours": {m: float(np.mean([ours["models"][m]["per_corruption"][o] for _, o in pairs])) for m in common},
              "theirs": {m: float(np.mean([theirs["models"][m]["per_corruption"][t] for t, _ in pairs]))
                         for m in common}}
    per_pair = {f"{t} ~ {o}": rank_agreement({m: ours["models"][m]["per_corruption"][o] for m in common},
                                             {m: theirs["models"][m]["per_corruption"][t] for m in common})
                for t, o in pairs}
    result = {
        "images": theirs["images"], "seed": theirs["seed"], "models": common,
        "mean_corrupted": score,
        "ranking": {s: sorted(common, key=lambda m: -score[s][m]) for s in score},
        "rank_agreement": rank_agreement(score["ours"], score["theirs"]),
        "mean_over_shared_corruptions": shared,
        "rank_agreement_shared": rank_agreement(shared["ours"], shared["theirs"]),
        "rank_agreement_per_shared_corruption": per_pair,
        "unmatched": {t: {"why": why, **{m: theirs["models"][m]["per_corruption"][t] for m in common}}
                      for t, why in unmatched_names.items() if t in names},
        "shared_corruptions": {
            f"{t} ~ {o}": {m: {"theirs": theirs["models"][m]["per_corruption"][t],
                               "ours": ours["models"][m]["per_corruption"][o]} for m in common}
            for t, o in shared_names.items() if t in names and o in ours_c},
        "protocol": protocol,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "measured_on": machine(),
    }
    def says(ra):
        return (f"Kendall tau {ra['kendall_tau']:.3f}: {ra['concordant_pairs']} of {ra['pairs']} model pairs "
                f"ordered the same way, {ra['discordant_pairs']} the other way (the rest tie in one suite)")

    md = [f"# Corruption suites cross-check ({result['images']} test images, seed {result['seed']})", "",
          f"Protocol: {result['protocol']}.", "",
          f"| model | scopelite, all {len(ours_c)} | MedMNIST-C, all {len(names)} | scopelite, the {len(pairs)} shared "
          f"| MedMNIST-C, the {len(pairs)} shared |",
          "|---|---|---|---|---|"]
    md += [f"| {m} | {100 * score['ours'][m]:.2f} % | {100 * score['theirs'][m]:.2f} % | "
           f"{100 * shared['ours'][m]:.2f} % | {100 * shared['theirs'][m]:.2f} % |" for m in common]
    agree = sum(r["discordant_pairs"] == 0 for r in per_pair.values())
    md += ["", f"- Means over all corruptions: {says(result['rank_agreement'])}.",
           f"- Means over the {len(pairs)} corruptions both suites have: {says(result['rank_agreement_shared'])}.",
           f"- Corruption by corruption: no pair of models swapped in {agree} of {len(pairs)} shared corruptions.", ""]
    for t, u in result["unmatched"].items():
        md += [f"- {t} (no counterpart: {u['why']}): " + ", ".join(f"{m} {100 * u[m]:.1f} %" for m in common), ""]
    md += [
           "| corruption (theirs ~ ours), MedMNIST-C / scopelite | " + " | ".join(common) + " |",
           "|---|" + "---|" * len(common)]
    for k, v in result["shared_corruptions"].items():
        md.append(f"| {k} | " + " | ".join(f"{100 * v[m]['theirs']:.1f} / {100 * v[m]['ours']:.1f} %"
                                           for m in common) + " |")
    write_json_atomic(out / "crosscheck.json", result)
    write_bytes_atomic(out / "crosscheck.md", ("\n".join(md) + "\n").encode())
    print("\n".join(md))
    return result


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("corrupt", help="(medmnistc environment) corrupt an npz of images")
    c.add_argument("src")
    c.add_argument("dst")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--native", action="store_true", help="whole fields of any size, corrupted as they are")
    r = sub.add_parser("run", help="(scopelite environment) benchmark MODELS under MedMNIST-C and compare")
    r.add_argument("models", nargs="+")
    r.add_argument("--ours", required=True, help="bench.json of cellcompress bench on the same models (with "
                   "--fields: native.json of cellcompress bench --protocol native)")
    r.add_argument("--fields", default=None, help="native protocol: class folders of whole fields")
    r.add_argument("--medmnistc-python", required=True, help="python of the environment that has medmnistc")
    r.add_argument("--out", required=True)
    r.add_argument("--limit", type=int, default=400)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--data", default=None)
    c2 = sub.add_parser("compare", help="(scopelite environment) compare two bench.json files already made")
    c2.add_argument("ours")
    c2.add_argument("theirs")
    c2.add_argument("--out", required=True)
    a = p.parse_args(argv)
    if a.cmd == "corrupt":
        corrupt(a.src, a.dst, a.seed, a.native)
    elif a.cmd == "run":
        run(a)
    else:
        compare(json.loads(Path(a.ours).read_text()), json.loads(Path(a.theirs).read_text()), Path(a.out),
                "as recorded in " + a.theirs)


if __name__ == "__main__":
    main()
