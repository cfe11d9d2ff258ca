"""A small shop's Celery app: the sample workload of celeriac's demo (scripts/demo) and of
examples/compose.yaml.

Tasks behave like real ones: card charges that are sometimes declined, receipts whose mail
server sometimes refuses them, an inventory sync that retries a flaky API, an order pipeline
run as a chain, and reports slow enough to back up their own queue (`reports`).

Environment: CELERY_BROKER_URL (default redis://127.0.0.1:6379/0).
"""
import os
import random
import time

from celery import Celery

app = Celery('shop', broker=os.environ.get('CELERY_BROKER_URL', 'redis://127.0.0.1:6379/0'))
app.conf.update(
    # What celeriac needs: task events from workers (or run them with -E), task-sent events from
    # producers (celery_task_sent_total and queue-wait times), JSON events.
    worker_send_task_events=True,
    task_send_sent_event=True,
    event_serializer='json',
    task_serializer='json',
    result_serializer='json',
    accept_content=['json'],
    enable_utc=True,
    broker_connection_retry_on_startup=True,
    task_routes={'shop.build_report': {'queue': 'reports'}},
)


class CardDeclined(Exception):
    pass


class MailboxUnavailable(Exception):
    pass


@app.task(name='shop.reserve_stock')
def reserve_stock(order_id):
    time.sleep(random.uniform(0.005, 0.03))
    return {'order_id': order_id, 'reserved': random.randint(1, 5)}


@app.task(name='shop.charge_card')
def charge_card(order):
    time.sleep(random.uniform(0.02, 0.3))
    if random.random() < 0.08:
        raise CardDeclined('card declined for order %s' % order['order_id'])
    return dict(order, charged=round(random.uniform(5, 250), 2))


@app.task(name='shop.send_receipt')
def send_receipt(order):
    time.sleep(random.uniform(0.005, 0.05))
    if random.random() < 0.03:
        raise MailboxUnavailable('550 mailbox unavailable for order %s' % order['order_id'])
    return {'order_id': order['order_id'], 'sent': True}


@app.task(name='shop.sync_inventory', bind=True, max_retries=4)
def sync_inventory(self, sku):
    time.sleep(random.uniform(0.05, 0.2))
    if random.random() < 0.4:
        raise self.retry(countdown=1, exc=ConnectionError('warehouse API timeout for %s' % sku))
    return {'sku': sku, 'synced': True}


@app.task(name='shop.build_report')
def build_report(period):
    time.sleep(random.uniform(2, 6))
    return {'period': period, 'rows': random.randint(100, 5000)}


# ---- the shop's own telemetry: structlog JSON lines and prometheus_client metrics ----------
# What a team writes beside Celery's events; celeriac's filelog and prometheus receivers collect
# it and celery_correlate puts every log line on its task's trace (task_id → trace_id/span_id).
#
#   SHOP_LOG=/path/shop.log           structlog JSONRenderer lines, one file per host
#   SHOP_METRICS_PORT=9100            prometheus_client page of this worker (all pool processes:
#   PROMETHEUS_MULTIPROC_DIR=/dir     prometheus_client's multiprocess mode, one page)

if os.environ.get('SHOP_LOG'):
    import structlog
    from celery import current_task
    from celery.signals import task_postrun, task_prerun, worker_init, worker_process_init
    from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

    TASKS = Counter('shop_tasks', 'Shop tasks run, by task and status.', ['task', 'status'])
    DURATION = Histogram('shop_task_duration_seconds', 'Shop task run time.', ['task'])

    def _task_id(logger, method, event):
        req = current_task.request if current_task else None
        if req is not None and req.id:
            event.setdefault('task_id', req.id)
        return event

    def _configure_logs():
        structlog.configure(
            processors=[
                structlog.processors.add_log_level,
                _task_id,
                structlog.processors.TimeStamper(fmt='iso', utc=True),
                structlog.processors.JSONRenderer(),
            ],
            logger_factory=structlog.WriteLoggerFactory(
                file=open(os.environ['SHOP_LOG'], 'a', buffering=1)),
        )

    log = structlog.get_logger()
    _started = {}

    @worker_process_init.connect(weak=False)
    def _child_init(**_):
        _configure_logs()

    @worker_init.connect(weak=False)
    def _serve_metrics(**_):
        port = os.environ.get('SHOP_METRICS_PORT')
        if port:
            registry = CollectorRegistry()
            if os.environ.get('PROMETHEUS_MULTIPROC_DIR'):
                from prometheus_client import multiprocess
                multiprocess.MultiProcessCollector(registry)
            start_http_server(int(port), addr='127.0.0.1', registry=registry)

    @task_prerun.connect(weak=False)
    def _prerun(task_id=None, task=None, **_):
        _started[task_id] = time.monotonic()
        log.info('task.started', task=task.name)

    @task_postrun.connect(weak=False)
    def _postrun(task_id=None, task=None, state=None, **_):
        took = time.monotonic() - _started.pop(task_id, time.monotonic())
        TASKS.labels(task=task.name, status=(state or 'UNKNOWN').lower()).inc()
        DURATION.labels(task=task.name).observe(took)
        log.info('task.finished', task=task.name, state=state, seconds=round(took, 4))
