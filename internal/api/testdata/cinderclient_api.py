"""Drive cinderclient's Python API as a program that embeds it would.

It reads its settings, a JSON object, from standard input: either
{"endpoint", "token"} (keystoneauth's token_endpoint plugin: a cairn
token sent to the endpoint given) or {"auth_url", "username",
"password", "project_id", "region"} (a password login to Keystone, the
endpoint from its catalog). It discovers the server's versions,
negotiates a microversion, then creates, reads, changes, backs up,
restores and deletes, and prints one JSON object of what it saw. Any
failure is an exception: a traceback and a non-zero exit.
"""

import json
import sys
import time

from cinderclient import api_versions
from cinderclient import client
from cinderclient import exceptions
from keystoneauth1 import session
from keystoneauth1 import token_endpoint
from keystoneauth1.identity import v3

SETTLED = ("available", "in-use", "error", "error_deleting", "error_restoring")


def settled(get, ident):
    """Read a resource until its status settles (the caller's deadline
    bounds the wait); return it, or None once it is gone."""
    while True:
        try:
            r = get(ident)
        except exceptions.NotFound:
            return None
        if r.status in SETTLED:
            return r
        time.sleep(0.05)


def main():
    cfg = json.load(sys.stdin)
    if "token" in cfg:
        auth = token_endpoint.Token(cfg["endpoint"], cfg["token"])
        kw = {}
    else:
        auth = v3.Password(auth_url=cfg["auth_url"], username=cfg["username"],
                           password=cfg["password"], project_id=cfg["project_id"],
                           user_domain_name="Default")
        kw = {"region_name": cfg["region"]}
    sess = session.Session(auth=auth)
    out = {}

    # Version discovery: the unversioned document, and the negotiation.
    base = client.Client("3.0", session=sess, **kw)
    endpoint = base.client.get_endpoint()
    out["endpoint"] = endpoint
    out["highest"] = client.get_highest_client_server_version(endpoint)
    out["server_versions"] = [
        {"id": v.id, "status": v.status, "version": v.version, "min_version": v.min_version}
        for v in base.services.server_api_version()]
    ver = api_versions.discover_version(base, api_versions.APIVersion("3.latest"))
    out["negotiated"] = ver.get_string()
    cs = client.Client(ver.get_string(), session=sess, **kw)

    vol = cs.volumes.create(1, name="py-one", description="from python", metadata={"k": "v"})
    vol = settled(cs.volumes.get, vol.id)
    out["created"] = {"id": vol.id, "status": vol.status, "size": vol.size, "name": vol.name,
                      "metadata": vol.metadata, "user_id": vol.user_id}
    out["listed"] = sorted(v.id for v in cs.volumes.list())
    cs.volumes.update(vol, name="py-two")
    cs.volumes.set_metadata(vol, {"m": "n"})
    cs.volumes.delete_metadata(vol, ["k"])
    cs.volumes.extend(vol, 2)
    vol = settled(cs.volumes.get, vol.id)
    out["changed"] = {"name": vol.name, "metadata": vol.metadata, "size": vol.size, "status": vol.status}

    snap = cs.volume_snapshots.create(vol.id, name="py-snap", metadata={"s": "t"})
    snap = settled(cs.volume_snapshots.get, snap.id)
    out["snapshot"] = {"id": snap.id, "status": snap.status, "volume_id": snap.volume_id,
                       "metadata": snap.metadata}

    full = cs.backups.create(vol.id, name="py-full")
    full = settled(cs.backups.get, full.id)
    incr = cs.backups.create(vol.id, name="py-incr", incremental=True)
    incr = settled(cs.backups.get, incr.id)
    out["backups"] = [{"id": b.id, "status": b.status, "is_incremental": b.is_incremental, "size": b.size}
                      for b in (full, incr)]
    restore = cs.restores.restore(incr.id, name="py-restored")
    restored = settled(cs.volumes.get, restore.volume_id)
    out["restored"] = {"id": restored.id, "status": restored.status, "size": restored.size,
                       "name": restored.name}

    absolute = cs.limits.get().absolute
    out["limits"] = {l.name: l.value for l in absolute}

    for b in (incr, full):
        cs.backups.delete(b)
        settled(cs.backups.get, b.id)
    cs.volume_snapshots.delete(snap)
    settled(cs.volume_snapshots.get, snap.id)
    for v in (restored, vol):
        cs.volumes.delete(v)
        settled(cs.volumes.get, v.id)
    out["after_delete"] = sorted(v.id for v in cs.volumes.list())
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
