"""Registration engines side by side: seconds per pair and Dice of warped labels, plus point-map speed.

Pairs are synthetic (cctrnet.registration.synthetic_pairs: a known random affine and a smooth deformation
of a labeled template), so the Dice of the moving label warped onto the fixed grid measures accuracy.
Prints a table and writes benchmarks/results/registration_benchmark.json.

    python benchmarks/registration_benchmark.py --sizes acdc --pairs 4 --torch-pairs 16 --deformable

``--deformable`` adds the torch engine's affine + deformable (stationary velocity field) row, batched, with
the stored field's bytes per pair and its quality checks. ``--fireants`` adds FireANTs' affine + greedy row
(benchmarks/fireants_row.py, which says how to install it in an environment of its own).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

SIZES = {  # shape (z, y, x), spacing (x, y, z) mm
    "acdc": ((10, 224, 224), (1.5, 1.5, 10.0)),
    "ct": ((100, 256, 256), (0.8, 0.8, 2.5)),
}


def make_pairs(size: str, count: int, deformation_mm: float):
    from cctrnet.registration.synthetic_pairs import make_subject, random_affine

    shape, spacing = SIZES[size]
    fixed = make_subject(shape, spacing, 0)
    return fixed, [make_subject(shape, spacing, 100 + i, random_affine(i), deformation_mm) for i in range(count)]


def warped_dice(result, moving, fixed) -> float:
    from cctrnet.registration.single_pair import result_transform
    from cctrnet.registration.synthetic_pairs import dice
    from cctrnet.registration.transforms import resample

    warped = resample(moving[1], moving[2], fixed[2], result_transform(result), nearest=True)
    return dice(warped, fixed[1])


def run_simpleitk(fixed, movings, method, settings):
    from cctrnet.registration.sitk_engine import register_pair_sitk

    rows = []
    for moving in movings:
        result = register_pair_sitk(fixed[0], fixed[2], moving[0], moving[2], method, settings)
        rows.append((result.seconds, warped_dice(result, moving, fixed) if result.ok else None))
    return rows


def run_torch(fixed, movings, settings):
    import torch

    from cctrnet.registration.torch_engine import PairVolumes, register_batch_torch

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    pairs = [PairVolumes(f"m{i}", "f", fixed[0], fixed[2], m[0], m[2]) for i, m in enumerate(movings)]
    start = time.perf_counter()
    results = register_batch_torch(pairs, settings, device)
    per_pair = (time.perf_counter() - start) / len(pairs)
    return [(per_pair, warped_dice(r, m, fixed) if r.ok else None) for r, m in zip(results, movings)]


def run_torch_deformable(fixed, movings, settings):
    """Affine then deformable, both batched; seconds per pair cover both stages."""
    import numpy as np
    import torch

    from cctrnet.registration.deformable_engine import register_batch_deformable
    from cctrnet.registration.single_pair import affine_matrix_of_text
    from cctrnet.registration.torch_engine import PairVolumes, register_batch_torch

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    pairs = [PairVolumes(f"m{i}", "f", fixed[0], fixed[2], m[0], m[2]) for i, m in enumerate(movings)]
    start = time.perf_counter()
    affine = register_batch_torch(pairs, settings, device)
    usable = [i for i, r in enumerate(affine) if r.ok]
    results = register_batch_deformable([pairs[i] for i in usable], [affine_matrix_of_text(affine[i].transform_text) for i in usable],
                                        [affine[i].transform_text for i in usable], settings, device)
    per_pair = (time.perf_counter() - start) / len(pairs)
    rows, extras = [], {"field_bytes_per_pair": [], "folded_fraction": [], "inverse_consistency_mm_p95": []}
    for i, result in zip(usable, results):
        rows.append((per_pair, warped_dice(result, movings[i], fixed) if result.ok else None))
        if result.ok:
            extras["field_bytes_per_pair"].append(len(result.field_bytes))
            extras["folded_fraction"].append(result.quality["folded_fraction"])
            extras["inverse_consistency_mm_p95"].append(result.quality["inverse_consistency_mm_p95"])
    rows += [(per_pair, None)] * (len(pairs) - len(usable))
    return rows, {k: float(np.max(v) if k != "field_bytes_per_pair" else np.mean(v)) for k, v in extras.items() if v}


def run_elastix(fixed, movings, method):
    try:
        import itk
    except ImportError:
        return None
    rows = []
    for moving in movings:
        start = time.perf_counter()
        fixed_image = itk.image_view_from_array(fixed[0])
        moving_image = itk.image_view_from_array(moving[0])
        for image, geometry in ((fixed_image, fixed[2]), (moving_image, moving[2])):
            image.SetSpacing(geometry.spacing_xyz)
            image.SetOrigin(geometry.origin_xyz)
        parameters = itk.ParameterObject.New()
        parameters.AddParameterMap(parameters.GetDefaultParameterMap("affine"))
        if method == "affine_bspline":
            parameters.AddParameterMap(parameters.GetDefaultParameterMap("bspline"))
        _, transform_parameters = itk.elastix_registration_method(fixed_image, moving_image, parameter_object=parameters,
                                                                  log_to_console=False)
        seconds = time.perf_counter() - start
        label = itk.image_view_from_array(moving[1].astype("float32"))
        label.SetSpacing(moving[2].spacing_xyz)
        label.SetOrigin(moving[2].origin_xyz)
        for index in range(transform_parameters.GetNumberOfParameterMaps()):
            transform_parameters.SetParameter(index, "FinalBSplineInterpolationOrder", "0")
        warped = itk.array_from_image(itk.transformix_filter(label, transform_parameters))
        from cctrnet.registration.synthetic_pairs import dice

        rows.append((seconds, dice(warped.round().astype("int16"), fixed[1])))
    return rows


def point_mapping_throughput(num_points: int = 100_000) -> dict[str, float]:
    """Seconds to map num_points with an affine map and with a B-spline field map (built from synthetic pairs)."""
    import tempfile

    import torch

    from cctrnet.preprocessing.case_storage import save_preprocessed_case
    from cctrnet.registration.pair_store import PairStore
    from cctrnet.registration.point_mapping import PointMapper
    from cctrnet.registration.runner import compute_missing_pairs
    from cctrnet.registration.settings import RegistrationSettings
    from cctrnet.registration.synthetic_pairs import make_subject, random_affine

    out = {}
    with tempfile.TemporaryDirectory() as root:
        data = Path(root) / "2d"
        for i in range(2):
            image, label, geometry = make_subject((10, 96, 96), (2.0, 2.0, 10.0), i, random_affine(i) if i else None)
            save_preprocessed_case(data, f"c{i}", image[None], label, {"geometry_preprocessed": geometry.to_dict()})
        settings = RegistrationSettings(bspline_iterations=5, bspline_levels=(2,))
        points = torch.rand(num_points, 3) * torch.tensor([10.0, 96.0, 96.0])
        for method in ("affine", "affine_bspline", "affine_deformable"):
            store = PairStore(Path(root) / method)
            engine = "torch" if method == "affine_deformable" else "simpleitk"
            affine_store = PairStore(Path(root) / "affine") if method == "affine_deformable" else None
            compute_missing_pairs(data, store, [("c1", "c0")], method, engine, settings, affine_store=affine_store)
            mapper = PointMapper(data, store, settings, ["c0", "c1"])
            mapper.map_points("c0", "c1", points)
            timings = []
            for _ in range(10):
                start = time.perf_counter()
                mapper.map_points("c0", "c1", points)
                timings.append(time.perf_counter() - start)
            out[f"{method}_ms_per_{num_points}_points"] = 1000 * min(timings)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["acdc"], choices=sorted(SIZES))
    parser.add_argument("--pairs", type=int, default=3, help="pairs per SimpleITK / elastix measurement")
    parser.add_argument("--torch-pairs", type=int, default=16, help="pairs in the torch batch")
    parser.add_argument("--bspline", action="store_true", help="also measure affine + B-spline")
    parser.add_argument("--deformable", action="store_true", help="also measure the torch affine + deformable engine")
    parser.add_argument("--fireants", action="store_true",
                        help="also measure FireANTs affine + greedy (when installed; benchmarks/fireants_row.py)")
    parser.add_argument("--skip", nargs="*", default=[], metavar="ENGINE:METHOD",
                        help="rows to leave out, e.g. simpleitk:affine_bspline (slow on CT sizes)")
    parser.add_argument("--threads", type=int, default=1, help="threads for every engine (default 1: fair per-core numbers)")
    parser.add_argument("--output", default="benchmarks/results/registration_benchmark.json")
    args = parser.parse_args()

    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(args.threads)
    import numpy as np
    import torch

    from cctrnet.registration.settings import RegistrationSettings

    torch.set_num_threads(args.threads)
    settings = RegistrationSettings(threads_per_process=args.threads)
    results = {"machine": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(), "threads": args.threads,
               "torch": torch.__version__, "cuda": torch.cuda.is_available(), "rows": []}
    for size in args.sizes:
        fixed, movings = make_pairs(size, max(args.pairs, args.torch_pairs), deformation_mm=2.0)
        runs = {("simpleitk", "affine"): lambda: run_simpleitk(fixed, movings[: args.pairs], "affine", settings),
                ("torch", "affine"): lambda: run_torch(fixed, movings[: args.torch_pairs], settings),
                ("elastix", "affine"): lambda: run_elastix(fixed, movings[: args.pairs], "affine")}
        if args.bspline:
            runs[("simpleitk", "affine_bspline")] = lambda: run_simpleitk(fixed, movings[: args.pairs], "affine_bspline", settings)
            runs[("elastix", "affine_bspline")] = lambda: run_elastix(fixed, movings[: args.pairs], "affine_bspline")
        if args.deformable:
            runs[("torch", "affine_deformable")] = lambda: run_torch_deformable(fixed, movings[: args.torch_pairs], settings)
        if args.fireants:
            from fireants_row import run_fireants

            runs[("fireants", "affine_greedy")] = lambda: run_fireants(fixed, movings[: args.torch_pairs])
        for (engine, method), run in runs.items():
            if f"{engine}:{method}" in args.skip:
                continue
            rows = run()
            if rows is None:
                continue
            extras = {}
            if isinstance(rows, tuple):
                rows, extras = rows
            seconds = float(np.mean([r[0] for r in rows]))
            dices = [r[1] for r in rows if r[1] is not None]
            results["rows"].append({
                "size": size, "shape_zyx": SIZES[size][0], "engine": engine, "method": method, "pairs": len(rows),
                "seconds_per_pair": seconds, "failed": len(rows) - len(dices),
                "dice_mean": float(np.mean(dices)) if dices else None, "dice_min": float(np.min(dices)) if dices else None,
                "projected_hours_all_ordered_pairs": {n: seconds * n * (n - 1) / 3600 / max(1, os.cpu_count() // args.threads)
                                                      for n in (20, 70, 140)},
                **extras,
            })
            _write(results, args.output)  # after every row: a long run that is stopped keeps what it measured
    results["point_mapping"] = point_mapping_throughput()
    print(f"{'size':6} {'engine':10} {'method':15} {'pairs':>5} {'s/pair':>8} {'Dice':>6} {'min':>6} {'fail':>4} "
          f"{'h@20':>6} {'h@70':>6} {'h@140':>6}")
    for row in results["rows"]:
        hours = row["projected_hours_all_ordered_pairs"]
        dice_text = f"{row['dice_mean']:6.3f} {row['dice_min']:6.3f}" if row["dice_mean"] is not None else f"{'-':>6} {'-':>6}"
        print(f"{row['size']:6} {row['engine']:10} {row['method']:15} {row['pairs']:5d} {row['seconds_per_pair']:8.3f} "
              f"{dice_text} {row['failed']:4d} {hours[20]:6.2f} {hours[70]:6.2f} {hours[140]:6.2f}")
    for row in results["rows"]:
        if "field_bytes_per_pair" in row:
            print(f"{row['size']} deformable: field {row['field_bytes_per_pair'] / 1024:.0f} KiB per pair, folded fraction "
                  f"max {row['folded_fraction']:.2e}, inverse consistency p95 max {row['inverse_consistency_mm_p95']:.2f} mm")
    print("point mapping:", {k: round(v, 3) for k, v in results["point_mapping"].items()})
    _write(results, args.output)
    print(f"wrote {args.output}")


def _write(results: dict, output: str) -> None:
    path = Path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(results, indent=2) + "\n")
    os.replace(partial, path)


if __name__ == "__main__":
    main()
