"""How fast the flywheel's curate and cluster stages run, and how fast the cluster matcher recognises
a request online.

Baselines measured in the same run:

- matcher: embedding one text with ``SentenceTransformer.encode`` (what any embedding-based
  recogniser pays at least); the matcher's figure includes building the signature, the
  three-part vector and the centroid comparison;
- curate / cluster: embedding the same requests' texts in batches with ``smallfleet.encoders.embed``
  (the bulk of their work), so the ratio shows what the stages add on top.

    python benchmarks/cluster_matcher.py [--calls 2000] [--probes 300] [--threads 1]

On a busy machine, one text's forward pass suffers badly from oversubscribed torch threads;
``--threads 1`` shows the single-request path without that.
"""

from __future__ import annotations

import argparse
import statistics
import time


def _ms(samples: list[float]) -> str:
    xs = sorted(samples)
    return f"p50 {statistics.median(xs):7.2f} ms   p95 {xs[int(0.95 * (len(xs) - 1))]:7.2f} ms"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=2000, help="generated calls to curate and cluster")
    ap.add_argument("--probes", type=int, default=300, help="held-out requests to match one by one")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    from smallfleet.demo import generate_workload, to_trace_records
    from smallfleet.encoders import clear_embedding_cache, embed, load_encoder
    from smallfleet.flywheel.cluster import cluster_records
    from smallfleet.flywheel.curate import curate, dialogue_text

    calls = generate_workload(args.calls + args.probes, seed=args.seed)
    fit, probes = calls[: args.calls], calls[args.calls :]
    records = to_trace_records(fit)
    texts = [dialogue_text(r.request) for r in records]
    load_encoder()
    embed(["warm up"])

    t = time.perf_counter()
    embed(texts)
    base = time.perf_counter() - t
    print(f"baseline: embed {len(texts)} request texts in batches   {base:7.2f} s")

    clear_embedding_cache()
    t = time.perf_counter()
    cur = curate(records)
    t_curate = time.perf_counter() - t
    print(
        f"curate {len(records)} calls (cold cache)                 {t_curate:7.2f} s   "
        f"x{t_curate / base:.2f} baseline"
    )
    kept = [*cur.train, *cur.validation, *cur.test]
    t = time.perf_counter()
    clustering = cluster_records(kept)
    t_cluster = time.perf_counter() - t
    print(
        f"cluster {len(kept)} calls (texts cached by curate)     {t_cluster:7.2f} s   "
        f"x{t_cluster / base:.2f} baseline   {len(clustering.clusters)} clusters, {clustering.noise} noise"
    )

    model = load_encoder()
    matcher = clustering.matcher
    one, matched = [], []
    for c in probes:
        t = time.perf_counter()
        model.encode([c.user_text], show_progress_bar=False)
        one.append((time.perf_counter() - t) * 1000)
    for c in probes:
        t = time.perf_counter()
        matcher.match(c.request)
        matched.append((time.perf_counter() - t) * 1000)
    again = []
    for c in probes:
        t = time.perf_counter()
        matcher.match(c.request)
        again.append((time.perf_counter() - t) * 1000)
    print(f"baseline: SentenceTransformer.encode, one text  {_ms(one)}")
    ratio = statistics.median(matched) / statistics.median(one)
    print(f"ClusterMatcher.match, new request            {_ms(matched)}   x{ratio:.2f} baseline")
    print(f"ClusterMatcher.match, repeated request       {_ms(again)}")


if __name__ == "__main__":
    main()
