"""Schedules: the deferred clean-up, every minute, running by default.

The planned promotions of ``promotion_schedules.yaml`` are schedules too, built and checked by
``planned`` when the definitions load, and stopped by default.
"""

from dagster import DefaultScheduleStatus, ScheduleDefinition

from promote_pipeline.defs.jobs import cleanup_due_tasks

cleanup_schedule = ScheduleDefinition(
    name="cleanup_due_tasks_every_minute", job=cleanup_due_tasks, cron_schedule="* * * * *",
    default_status=DefaultScheduleStatus.RUNNING,
    description="Delete blue deployments and artifacts whose rollback window has ended (ops.scheduled_tasks), and"
                " the artifacts the retention rule lets go.",
)
