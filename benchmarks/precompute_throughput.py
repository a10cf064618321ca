"""Feature pre-computation throughput with 1 and 2 workers, measured in one run on the same videos.

Renders synthetic videos, then encodes them at the target fps through a randomly initialised SigLIP vision tower
(no download) with 1 worker and with 2 workers (1 torch thread each); prints frames/s and the speed-up. Worker
start-up (spawn, model build) is excluded; decoding, encoding and writing are included.

Usage:

    python benchmarks/precompute_throughput.py --num-videos 8 --seconds 30 --fps 2
"""

import argparse
import tempfile

from videollm_mod.data_scripts.precompute_features import RandomSiglipFactory, precompute_features
from videollm_mod.data_scripts.synthetic import dataset_paths, generate_dataset


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-videos", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--fps", type=float, default=2.0)
    parser.add_argument("--image-size", type=int, default=64, help="vision tower resolution")
    parser.add_argument("--hidden-size", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    args = parser.parse_args(argv)
    factory = RandomSiglipFactory(hidden_size=args.hidden_size, num_hidden_layers=args.layers,
                                  image_size=args.image_size, patch_size=8)  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        generate_dataset(f"{tmp}/data", num_videos=args.num_videos, seconds=args.seconds, num_coin_videos=0, seed=0)
        import glob

        videos = sorted(glob.glob(f"{dataset_paths(f'{tmp}/data')['ego4d_videos']}/*.mp4"))
        results = {}
        for workers in (1, 2):
            stats = precompute_features(videos, f"{tmp}/features_{workers}", factory, fps=args.fps,
                                        num_workers=workers, threads_per_worker=1, progress=False)  # fmt: skip
            results[workers] = stats.frames_per_second
            print(
                f"{workers} worker(s): {stats.frames} frames in {stats.seconds:.2f} s = {stats.frames_per_second:.1f} frames/s"
            )
    print(f"speed-up 2 vs 1 workers: {results[2] / results[1]:.2f}x")


if __name__ == "__main__":
    main()
