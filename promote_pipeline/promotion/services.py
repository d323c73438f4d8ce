"""The resources a promotion step talks to, and the settings it runs with, bundled so that helpers take one
argument."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from promote_pipeline.promotion.settings import Settings
from resources.artifact_store import LocalArtifactStore
from resources.odoo_host import LocalOdooHost
from resources.ops_db import DeploymentRecord, OpsDatabase
from resources.router import RouterError, RouterResource, RoutingState, Upstream


@dataclass
class Services:
    ops_db: OpsDatabase
    host: LocalOdooHost
    store: LocalArtifactStore
    router: RouterResource
    settings: Settings

    @classmethod
    def from_resources(cls, res: dict[str, Any]) -> Services:
        """From the resource dict of ``defs.resources.build_resources`` (keys as the ops name them)."""
        return cls(ops_db=res["ops_db"], host=res["odoo_host"], store=res["artifact_store"], router=res["router"],
                   settings=res["settings"])


def upstream(deployment: DeploymentRecord, colour: str) -> Upstream:
    assert deployment.http_port is not None
    return Upstream(name=deployment.deployment_id, colour=colour, http_port=deployment.http_port,
                    websocket_port=deployment.websocket_port or deployment.http_port)


def switch_confirmed(router: RouterResource, environment_id: str, target: Upstream) -> RoutingState:
    """``switch_active``, then the running router asked whether it now serves ``target``: a switch is claimed
    (cutover recorded, "traffic back on blue") only once the router itself says so, never from routes.json."""
    state = router.switch_active(environment_id, target)
    served = router.served_upstream(environment_id)
    if not served.is_upstream(target):
        raise RouterError(f"the router accepted the switch to {target.name} but serves {served.name!r}"
                          f" ({served.source})")
    return state
