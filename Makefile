.PHONY: setup demo test bench

setup:
	bash scripts/setup.sh

demo: setup
	.venv/bin/tunelab data example bbc-news --out data/news
	.venv/bin/tunelab train examples/news-topics.yaml

test: setup
	bash scripts/with-postgres.sh .venv/bin/python -m pytest -q

bench: setup
	.venv/bin/python -m pip install -q -e ".[bench]"
	.venv/bin/python benchmarks/bench_text_classification.py
	.venv/bin/python benchmarks/bench_token_classification.py
	.venv/bin/python benchmarks/bench_causal_lm.py
	.venv/bin/python benchmarks/bench_embedding.py
	.venv/bin/python benchmarks/bench_workspace.py
	.venv/bin/python benchmarks/bench_autopilot.py
