"""Validate Kubernetes manifests offline with kubernetes-validate (used by tests/kubernetes.rs).

usage: k8s_validate.py FILE...

Every network connection is refused inside this process, so a validator that tried to download
a schema would fail. Prints one JSON line: {"files": {file: [{"kind", "name", "result",
"error"}]}} where result is "valid", "invalid" or "no_schema" (a custom resource or a
kustomization, which the package ships no schema for), plus each document as parsed.
"""
import json
import socket
import sys

import yaml


def _no_network(*_args, **_kwargs):
    raise OSError('network access attempted during offline validation')


socket.socket.connect = _no_network
socket.create_connection = _no_network

import kubernetes_validate  # noqa: E402  (after the network is cut)
from kubernetes_validate.utils import SchemaNotFoundError, ValidationError  # noqa: E402


def main(paths):
    version = kubernetes_validate.latest_version()
    out = {'version': version, 'files': {}}
    for path in paths:
        rows = []
        with open(path) as f:
            for doc in yaml.safe_load_all(f):
                if doc is None:
                    continue
                row = {'kind': doc.get('kind'), 'name': (doc.get('metadata') or {}).get('name'),
                       'doc': doc}
                try:
                    kubernetes_validate.validate(doc, version, strict=True)
                    row['result'] = 'valid'
                except SchemaNotFoundError as e:
                    row['result'] = 'no_schema'
                    row['error'] = str(e)
                except ValidationError as e:
                    row['result'] = 'invalid'
                    row['error'] = str(e)
                rows.append(row)
        out['files'][path] = rows
    print(json.dumps(out))


if __name__ == '__main__':
    main(sys.argv[1:])
