"""The application's own telemetry, as a team writes it beside Celery's events (issue 20):
task logs with structlog's JSONRenderer to a file, custom metrics with prometheus_client on a
port. Loaded by shopapp when CELERIAC_EVALAPP_LOG is set.

Environment:
  CELERIAC_EVALAPP_LOG   file the structlog JSON lines are appended to
  CELERIAC_EVALAPP_PORT  port of the prometheus_client endpoint (started in the pool child;
                         run the worker with --concurrency 1 so one process owns the counters)

Task `evaluation.run(eval_id, n_lines, status)`: logs `task.started`, `n_lines` × `evaluation.step`,
`task.finished` (each line carries task_id, eval_id), counts evaluation_tasks_total{status},
observes evaluation_duration_seconds, sets evaluation_queue_depth to n_lines.
"""
import os
import time

import structlog
from celery import current_task
from celery.signals import worker_process_init
from prometheus_client import Counter, Gauge, Histogram, start_http_server

from shopapp import app

TASKS = Counter('evaluation_tasks', 'Evaluations run, by status.', ['status'])
DURATION = Histogram('evaluation_duration_seconds', 'Time per evaluation.',
                     buckets=(0.01, 0.05, 0.1, 0.5, 1.0))
DEPTH = Gauge('evaluation_queue_depth', 'Steps of the last evaluation.')

_log_file = None


class ReopeningFile:
    """Append to a path and reopen it when it was rotated away (what logging's
    WatchedFileHandler does), so a rename rotation starts a new file."""

    def __init__(self, path):
        self.path = path
        self.f = None
        self._open()

    def _open(self):
        if self.f:
            self.f.close()
        self.f = open(self.path, 'a', buffering=1)
        self.ino = os.fstat(self.f.fileno()).st_ino

    def write(self, s):
        try:
            if os.stat(self.path).st_ino != self.ino:
                self._open()
        except FileNotFoundError:
            self._open()
        self.f.write(s)

    def flush(self):
        self.f.flush()


def _add_task_id(logger, method, event_dict):
    task = current_task
    if task and task.request and task.request.id:
        event_dict.setdefault('task_id', task.request.id)
    return event_dict


def configure():
    global _log_file
    _log_file = ReopeningFile(os.environ['CELERIAC_EVALAPP_LOG'])
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            _add_task_id,
            structlog.processors.TimeStamper(fmt='iso', utc=True),
            structlog.processors.JSONRenderer(),
        ],
        logger_factory=structlog.WriteLoggerFactory(file=_log_file),
        cache_logger_on_first_use=False,
    )


@worker_process_init.connect
def _start(**_):
    configure()
    port = os.environ.get('CELERIAC_EVALAPP_PORT')
    if port:
        start_http_server(int(port), addr='127.0.0.1')


log = structlog.get_logger()


@app.task(name='evaluation.run')
def run(eval_id, n_lines=3, status='ok'):
    t0 = time.monotonic()
    log.info('task.started', eval_id=eval_id)
    for i in range(n_lines):
        log.info('evaluation.step', eval_id=eval_id, step=i)
    DEPTH.set(n_lines)
    TASKS.labels(status=status).inc()
    DURATION.observe(time.monotonic() - t0)
    log.info('task.finished', eval_id=eval_id, status=status)
    return {'eval_id': eval_id, 'lines': n_lines + 2}
