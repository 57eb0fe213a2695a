from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "core"
    verbose_name = "Core"

    def ready(self) -> None:
        # django-q2 runs task functions directly (not through core.queue.run): its workers tick the
        # usage meter on pre_execute, sent in the worker process before each task while it is still
        # idle. Not post_execute_in_worker: that is sent holding the worker's timer lock, which the
        # cluster's guard takes too, so a slow flush there would stall the guard.
        from django_q.signals import pre_execute

        from core import usage

        pre_execute.connect(usage.task_tick, dispatch_uid="core.usage.task_tick")
