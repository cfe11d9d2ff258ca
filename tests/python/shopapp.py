"""The Celery app that celeriac's end-to-end tests run (the same `shopapp` as shared/fixtures).

Environment:
  CELERY_BROKER_URL      broker (default redis://127.0.0.1:6379/0)
  CELERY_RESULT_BACKEND  optional result backend (none by default)
  CELERIAC_TRANSPORT_OPTIONS  JSON merged into broker_transport_options, e.g.
                         {"master_name": "mymaster"} for a sentinel:// broker
  CELERIAC_OTEL=1        instrument with opentelemetry-instrumentation-celery and export spans
                         over OTLP; the exporter reads the standard OTEL_EXPORTER_OTLP_* variables
                         (OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_PROTOCOL=grpc|http/protobuf,
                         grpc by default); OTEL_SERVICE_NAME overrides the service name.
"""
import json
import os
import time

from celery import Celery
from celery.signals import worker_process_init, worker_process_shutdown

app = Celery(
    'shopapp',
    broker=os.environ.get('CELERY_BROKER_URL', 'redis://127.0.0.1:6379/0'),
    backend=os.environ.get('CELERY_RESULT_BACKEND') or None,
)
app.conf.update(
    task_send_sent_event=True,
    worker_send_task_events=True,
    event_serializer='json',
    task_serializer='json',
    result_serializer='json',
    accept_content=['json'],
    enable_utc=True,
    timezone='UTC',
    broker_connection_retry_on_startup=True,
    # kombu's Redis defaults, spelled out: priority 0-2 -> key `queue`, 3-5 -> `queue\x06\x163`,
    # 6-8 -> `queue\x06\x166`, 9 -> `queue\x06\x169`.
    broker_transport_options={
        'priority_steps': [0, 3, 6, 9],
        **json.loads(os.environ.get('CELERIAC_TRANSPORT_OPTIONS') or '{}'),
    },
)


@app.task(name='shop.charge_card')
def charge_card(order_id, amount):
    time.sleep(0.02)
    return {'order_id': order_id, 'amount': amount, 'status': 'charged'}


@app.task(name='shop.send_receipt')
def send_receipt(order_id):
    raise ValueError('no e-mail address on order %s' % order_id)


@app.task(name='shop.sync_inventory', bind=True, max_retries=5)
def sync_inventory(self, sku):
    if self.request.retries < 2:
        raise self.retry(countdown=0.2, exc=ConnectionError('warehouse API timeout'))
    return {'sku': sku, 'synced': True}


@app.task(name='shop.slow_report')
def slow_report(period):
    time.sleep(5)
    return {'period': period, 'rows': 1234}


@app.task(name='shop.a')
def a(x):
    return x + 1


@app.task(name='shop.b')
def b(x):
    return x * 10


@app.task(name='shop.c')
def c(x):
    return 'total=%s' % x


@app.task(name='shop.sleep')
def sleep(seconds):
    time.sleep(seconds)
    return seconds


# ---- optional OpenTelemetry instrumentation ---------------------------------------------

_provider = None


def otel_enabled():
    return os.environ.get('CELERIAC_OTEL') == '1'


def init_otel(service_name):
    """Install a TracerProvider exporting over OTLP and instrument Celery (idempotent)."""
    global _provider
    if _provider is not None:
        return _provider
    from opentelemetry import trace
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    protocol = os.environ.get('OTEL_EXPORTER_OTLP_TRACES_PROTOCOL') or \
        os.environ.get('OTEL_EXPORTER_OTLP_PROTOCOL', 'grpc')
    if protocol == 'grpc':
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    else:  # http/protobuf
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    resource = Resource.create({'service.name': os.environ.get('OTEL_SERVICE_NAME', service_name)})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(), schedule_delay_millis=200))
    trace.set_tracer_provider(provider)
    CeleryInstrumentor().instrument()
    _provider = provider
    return provider


def flush_otel():
    if _provider is not None:
        _provider.force_flush(5000)


# As the instrumentation's README says: with prefork, instrument in each pool child.
@worker_process_init.connect(weak=False)
def _init_worker_otel(*args, **kwargs):
    if otel_enabled():
        init_otel('shopapp-worker')


@worker_process_shutdown.connect(weak=False)
def _flush_worker_otel(*args, **kwargs):
    if _provider is not None:
        _provider.shutdown()


# ---- optional application telemetry (structlog + prometheus_client), see evalapp.py --------

if os.environ.get('CELERIAC_EVALAPP_LOG'):
    import evalapp  # noqa: E402,F401  (registers evaluation.run)
