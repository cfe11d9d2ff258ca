"""Regenerates the golden remote-write encodings that src/prompb.rs tests against.

Compiles proto/remote.proto with protoc (from the grpcio-tools wheel, so no system protoc) into
a temporary directory, builds the messages below and prints them as hex. Run it in any venv:

    python -m venv /tmp/pb && /tmp/pb/bin/pip install grpcio-tools
    /tmp/pb/bin/python proto/golden.py
"""
import importlib
import os
import sys
import tempfile

from grpc_tools import protoc

here = os.path.dirname(os.path.abspath(__file__))
out = tempfile.mkdtemp()
rc = protoc.main(['protoc', f'-I{here}', f'--python_out={out}', os.path.join(here, 'remote.proto')])
if rc != 0:
    sys.exit(f'protoc failed: {rc}')
sys.path.insert(0, out)
pb = importlib.import_module('remote_pb2')

req = pb.WriteRequest()
ts = req.timeseries.add()
ts.labels.add(name='__name__', value='celery_task_succeeded_total')
ts.labels.add(name='job', value='celery')
ts.samples.add(value=3.0, timestamp=1764074563123)
ts.samples.add(value=4.5, timestamp=1764074564123)
ex = ts.exemplars.add(value=0.25, timestamp=-1)
ex.labels.add(name='trace_id', value='ab')
h = ts.histograms.add(count_int=5, sum=-2.5, schema=-3, zero_threshold=1e-128, zero_count_int=1,
                      reset_hint=pb.Histogram.NO, timestamp=7)
h.negative_spans.add(offset=-2, length=1)
h.negative_deltas.extend([1])
h.positive_spans.add(offset=0, length=2)
h.positive_spans.add(offset=3, length=1)
h.positive_deltas.extend([1, -1, 2])
fh = ts.histograms.add(count_float=2.5, zero_count_float=0.5, schema=2)
fh.positive_spans.add(offset=1, length=1)
fh.positive_counts.extend([2.0])
fh.custom_values.extend([0.1, 1.0])
md = req.metadata.add(type=pb.MetricMetadata.HISTOGRAM, metric_family_name='celery_task_runtime',
                      help='Task runtime.', unit='seconds')
print(req.SerializeToString().hex())
