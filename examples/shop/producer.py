"""Sends the shop's traffic forever (until interrupted): orders as a chain
reserve_stock -> charge_card -> send_receipt, inventory syncs, and reports on the slow
`reports` queue, faster than one worker can build them.

Usage: python producer.py [--orders-per-second N]   (CELERY_BROKER_URL names the broker)
"""
import argparse
import itertools
import random
import time

from celery import chain

from tasks import build_report, charge_card, reserve_stock, send_receipt, sync_inventory


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--orders-per-second', type=float, default=4.0)
    args = ap.parse_args()
    pause = 1.0 / max(args.orders_per_second, 0.1)
    for n in itertools.count(1):
        order_id = 10000 + n
        chain(reserve_stock.s(order_id), charge_card.s(), send_receipt.s()).apply_async()
        if n % 3 == 0:
            sync_inventory.delay('SKU-%d' % random.randint(1, 40))
        if n % 8 == 0:
            build_report.delay('2026-W%02d' % random.randint(1, 52))
        time.sleep(pause)


if __name__ == '__main__':
    try:
        main()
    except KeyboardInterrupt:
        pass
