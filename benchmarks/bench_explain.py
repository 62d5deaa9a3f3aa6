"""`prefixcache explain` speed: 1,000 requests of about 4,000 tokens, tokenization
included (target: under 30 s on this machine), and how the time grows with the trace.

Run: .venv/bin/python benchmarks/bench_explain.py [--base-url URL]
The trace is synthetic (traces/synth.py: 250 sessions x 4 turns of the guide's agents,
naive layout so that most requests have a break to explain). Tokens come from the
embedded model's tokenizer, loaded locally, or from a server's /tokenize with --base-url.
Prints seconds for tokenize and analysis at 250, 500 and 1,000 requests: linear growth
shows as a ratio of about 4 between 1,000 and 250.
"""

from __future__ import annotations

import argparse
import time

from prefixcache.engine.embedded_model import embedded_model_dir
from prefixcache.prompts.library import PromptLibrary
from prefixcache.settings import load_settings
from prefixcache.traces.explain import explain
from prefixcache.traces.synth import SynthSettings, synth_trace
from prefixcache.traces.tokenize import (
    ChatTokenizer,
    LocalTokenizer,
    ServerTokenizer,
    tokenize_trace,
)

TARGET_S = 30.0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-url", default=None)
    parser.add_argument("--model", default=None)
    parser.add_argument("--block-size", type=int, default=128)
    args = parser.parse_args()
    settings = load_settings()
    library = PromptLibrary(settings)
    records = synth_trace(
        library, SynthSettings(sessions=250, turns=4, attachment_words=150, layout="naive")
    )
    tokenizer: ChatTokenizer
    if args.base_url:
        model = args.model or settings.llm.vllm.model_name()
        tokenizer = ServerTokenizer(args.base_url, model)
    else:
        tokenizer = LocalTokenizer(embedded_model_dir(settings.llm.vllm.model_cache_dir))
    print(f"tokens from {tokenizer.name}; block size {args.block_size}")
    print(f"{'requests':>8} {'tokens/req':>10} {'tokenize s':>10} {'analyze s':>9} {'total s':>8}")
    totals = {}
    for n in (250, 500, 1000):
        subset = records[:n]
        tokens, tok_s = tokenize_trace(subset, tokenizer)
        started = time.perf_counter()
        report = explain(subset, tokens, args.block_size)
        analyze_s = time.perf_counter() - started
        totals[n] = tok_s + analyze_s
        per = sum(map(len, tokens)) / n
        print(f"{n:>8} {per:>10.0f} {tok_s:>10.2f} {analyze_s:>9.2f} {totals[n]:>8.2f}")
    total = report.total
    print(
        f"1000 requests: {total.breaks} breaks, causes {dict(total.causes.most_common())}, "
        f"reusable {total.hit_rate or 0:.1%}, if fixed {total.fixed_hit_rate or 0:.1%}"
    )
    verdict = "met" if totals[1000] < TARGET_S else "NOT met"
    print(f"target: 1,000 requests in under {TARGET_S:.0f} s: {totals[1000]:.1f} s, {verdict}")
    print(f"growth 1000/250: {totals[1000] / totals[250]:.1f}x (linear: about 4)")


if __name__ == "__main__":
    main()
