"""Backfill benchmark: N generated Stripe customers into the fake Customer.io. Run by hand:

    .venv/bin/python bench/backfill.py                    # 10,000 customers, test-mode key
    .venv/bin/python bench/backfill.py --customers 1000 --live-key

The fake Stripe API (serving a generated world, `tests/fakes/stripe_world.py`) and the fake
Customer.io run in threads of this process; `billbridge backfill` runs as a child process
with its own SQLite file in a temporary directory, so its peak RSS is its own. The fake
Stripe enforces the key's rate limit (25 req/s test, 100 live) with real 429s.
Prints wall time, Stripe requests, Customer.io requests and peak memory.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.fakes.customerio import FakeCustomerIO  # noqa: E402
from tests.fakes.stripe_api import FakeStripe  # noqa: E402
from tests.fakes.stripe_world import generate_world, load_world  # noqa: E402

BILLBRIDGE = str(Path(sys.executable).with_name("billbridge"))
TEST_KEY = "sk_test_bench_backfill_key_0000"
LIVE_KEY = "sk_live_bench_backfill_key_0000"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--batch-size", type=int, default=200, help="identifies per request")
    parser.add_argument(
        "--live-key", action="store_true", help="use an sk_live_ key: 100 req/s, not 25"
    )
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds for the run")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir and the log")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    key = LIVE_KEY if args.live_key else TEST_KEY
    started = time.perf_counter()
    world = generate_world(args.customers, seed=args.seed, events=False)
    counts = {
        "customers": len(world.customers),
        "subscriptions": len(world.subscriptions),
        "invoices": len(world.invoices),
        "charges": len(world.charges),
        "refunds": len(world.refunds),
        "disputes": len(world.disputes),
    }
    print(f"world: {counts} (generated in {time.perf_counter() - started:.1f} s)")
    tmp = Path(tempfile.mkdtemp(prefix="billbridge-bench-backfill-"))
    stripe = FakeStripe(api_key=key).start()
    cio = FakeCustomerIO(app_rate_limit=None).start()
    try:
        stripe.livemode = args.live_key
        load_world(stripe, world, events=False)
        stripe.rate_limit = 100 if args.live_key else 25
        del world
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "CUSTOMERIO_"))},
            "DATABASE_URL": f"sqlite:///{tmp / 'backfill.db'}",
            "STRIPE_API_KEY": key,
            "STRIPE_API_BASE": stripe.base_url,
            "BILLBRIDGE_VAR_DIR": str(tmp / "var"),
            "BILLBRIDGE_LOG_LEVEL": "WARNING",
            **cio.settings_env(),
        }
        log_path = tmp / "backfill.log"
        command = [BILLBRIDGE, "backfill", "--batch-size", str(args.batch_size)]
        print(f"running: billbridge backfill --batch-size {args.batch_size} ({key[:8]}... key)")
        run_started = time.perf_counter()
        with log_path.open("wb") as log:
            completed = subprocess.run(
                command,
                env=env,
                cwd=tmp,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=args.timeout,
                check=False,
            )
        wall = time.perf_counter() - run_started
        peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
        output = log_path.read_text(errors="replace")
        stripe_requests = len(stripe.requests)
        batch_requests = [r for r in cio.requests if r["path"] == "/api/v2/batch"]
        people = len(cio.people)
        summary = [line for line in output.splitlines() if line.startswith("Backfill (")]
        print(summary[-1] if summary else "(no summary line)")
        print()
        print(f"exit code:              {completed.returncode}")
        print(f"customers in Customer.io: {people} of {counts['customers']}")
        print(f"wall time:              {wall:.1f} s")
        per_customer = stripe_requests / max(counts["customers"], 1)
        print(f"Stripe requests:        {stripe_requests} ({per_customer:.3f} per customer)")
        print(
            f"Customer.io requests:   {len(batch_requests)} "
            f"({counts['customers'] / max(len(batch_requests), 1):.0f} customers per request)"
        )
        print(f"peak RSS (backfill):    {peak_kib / 1024:.0f} MiB")
        if completed.returncode != 0:
            print(output[-3000:])
            return 1
        return 0
    finally:
        stripe.stop()
        cio.stop()
        if args.keep:
            print(f"kept: {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
