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
