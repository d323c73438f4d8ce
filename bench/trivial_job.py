"""The floor under any promotion: a linear Dagster job of eight trivial ops, in process, as ``promote run``
executes its job (same interpreter, same Dagster, an ephemeral instance). Timed by the benchmark."""

from __future__ import annotations

from dagster import DagsterInstance, in_process_executor, job, op


@op
def first() -> int:
    return 1


@op
def step(x: int) -> int:
    return x + 1


@job(executor_def=in_process_executor)
def eight_trivial_ops() -> None:
    step(step(step(step(step(step(step(first())))))))


if __name__ == "__main__":
    result = eight_trivial_ops.execute_in_process(
        instance=DagsterInstance.ephemeral(),
        run_config={"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}})
    raise SystemExit(0 if result.success else 1)
