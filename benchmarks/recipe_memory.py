"""Peak memory of the 8-device ConvNeXt-T recipe run as a user's smoke test on the CPU:

    python train.py -c configs/convnext/convnext_tiny_ascend.yaml --distribute False --data_dir D \
        --device_target CPU --dataset_sink_mode False

(batch 16, 224 px, amp_level O2 in the recipe), for a few steps on the shipped digits. Prints the peak resident
memory of the training process, its exit status and its images/s.

    python benchmarks/recipe_memory.py [--steps 4] [--amp_level O2]
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=4, help="training steps (batch 16)")
    parser.add_argument("--amp_level", default=None, help="override the recipe's amp_level (O2)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as run_dir:
        command = [sys.executable, "train.py", "-c", "configs/convnext/convnext_tiny_ascend.yaml", "--distribute",
                   "False", "--data_dir", os.path.join(ROOT, "datasets", "mnist5k"), "--device_target", "CPU",
                   "--dataset_sink_mode", "False", "--epoch_size", "1", "--num_samples", str(16 * args.steps),
                   "--val_while_train", "False", "--num_parallel_workers", "2", "--ckpt_save_dir", run_dir]
        if args.amp_level:
            command += ["--amp_level", args.amp_level]
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        peak_gib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2 ** 20  # KiB on Linux
        records = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
        amp_notes = [line.split("INFO mindcv: ")[-1] for line in result.stderr.splitlines() if "amp_level" in line]
        print(f"exit status {result.returncode}, peak resident memory {peak_gib:.2f} GiB, "
              f"{records[-1]['images_per_s'] if records else 'no'} images/s over {args.steps} steps")
        for note in amp_notes:
            print(note)
        if result.returncode:
            print(result.stderr[-2000:])


if __name__ == "__main__":
    main()
