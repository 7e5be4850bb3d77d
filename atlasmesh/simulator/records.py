"""Fleet-core rows for the static world: tenants, fleets, vehicles, routes, policies, users, keys."""

from __future__ import annotations

import base64
import hashlib
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from atlasmesh.simulator.catalog import CITIES, FIRMWARE_V1, FIRMWARE_V2, STATUS_NAMES, TIRE_KEYS
from atlasmesh.simulator.ops import RESERVE_PERCENT
from atlasmesh.simulator.world import STREAM_WORLD, World, new_id, rng_for, vehicle_profile

# Order of upserts: parents before children (foreign keys).
STATIC_TABLES = (
    "organizations",
    "fleets",
    "vehicles",
    "routes",
    "policies",
    "users",
    "certificates",
    "secrets",
)
EVENT_TABLES = ("trips", "policy_decisions", "vehicle_commands", "maintenance_records", "alerts")

_REGO = {
    "trip_dispatch": """package atlasmesh.dispatch

default allow := false

allow if {
    not data.atlasmesh.energy.deny
    not data.atlasmesh.hours.deny
    not data.atlasmesh.maintenance.deny
}
""",
    "energy_reserve": f"""package atlasmesh.energy

deny if input.vehicle.energy_percent < input.trip.energy_needed_percent + {RESERVE_PERCENT:.0f}
""",
    "operating_hours": """package atlasmesh.hours

deny if input.context.local_hour < data.tenant.open_hour
deny if input.context.local_hour >= data.tenant.close_hour
""",
    "maintenance_lockout": """package atlasmesh.maintenance

deny if input.vehicle.status == "maintenance"
""",
}


def static_rows(world: World) -> dict[str, list[dict[str, Any]]]:
    """Rows of the tables that describe the world before the simulated period starts."""
    rng = rng_for(world.config.seed, STREAM_WORLD, 1)
    origin = world.config.origin
    rows: dict[str, list[dict[str, Any]]] = {t: [] for t in STATIC_TABLES}
    for org in world.orgs:
        stamp = org.created_at
        rows["organizations"].append(
            {
                "organization_id": org.organization_id,
                "name": org.name,
                "sector": org.sector.name,
                "configuration": {
                    "operating_hours": {
                        "open": org.sector.open_hour,
                        "close": org.sector.close_hour,
                    },
                    "energy_reserve_percent": RESERVE_PERCENT,
                },
                "entitlements": {
                    "max_vehicles": 500 if org.tier == "enterprise" else 100,
                    "api_access": org.tier != "basic",
                },
                "subscription_tier": org.tier,
                "is_active": True,
                "created_at": stamp,
                "updated_at": stamp,
            }
        )
        for name, rego in _REGO.items():
            effective = org.created_at + timedelta(days=2)
            rows["policies"].append(
                {
                    "policy_id": world.policies[(org.index, name)],
                    "organization_id": org.organization_id,
                    "name": name,
                    "version": "1.2.0",
                    "rego_code": rego,
                    "policy_schema": {"input": ["vehicle", "trip", "context"]},
                    "sector": org.sector.name,
                    "environment": "production",
                    "is_active": True,
                    "effective_from": effective,
                    "effective_until": None,
                    "created_by": f"{_admin(world, org.index)}",
                    "created_at": effective,
                    "updated_at": effective,
                }
            )
        for i, secret_type in enumerate(("api_key", "webhook_token")):
            rows["secrets"].append(
                _secret(world, org.index, org.organization_id, secret_type, i, stamp, rng)
            )
    for fleet in world.fleets:
        rows["fleets"].append(
            {
                "fleet_id": fleet.fleet_id,
                "organization_id": world.orgs[fleet.org].organization_id,
                "name": fleet.name,
                "sector": world.orgs[fleet.org].sector.name,
                "configuration": {
                    "depot": {"lat": fleet.depot[0], "lon": fleet.depot[1]},
                    "city": CITIES[fleet.city].name,
                },
                "status": "active",
                "metadata": {"timezone_offset_h": CITIES[fleet.city].utc_offset_h},
                "created_at": fleet.created_at,
                "updated_at": fleet.created_at,
            }
        )
    for route in world.routes:
        rows["routes"].append(
            {
                "route_id": route.route_id,
                "organization_id": world.orgs[route.org].organization_id,
                "name": route.name,
                "waypoints": [
                    {"lat": float(a), "lon": float(b)}
                    for a, b in zip(route.lat, route.lon, strict=True)
                ],
                "distance_km": round(route.distance_km, 3),
                "estimated_duration_minutes": round(route.distance_km / route.mean_speed_kmh * 60),
                "constraints": {"max_speed_kmh": 110, "depot_return": True},
                "optimization_params": {"objective": "time", "avoid_tolls": bool(route.index % 2)},
                "created_by": _admin(world, route.org),
                "status": "active",
                "created_at": route.created_at,
                "updated_at": route.created_at,
            }
        )
    for vehicle in world.vehicles:
        rows["vehicles"].append(
            vehicle_row(world, vehicle.index, "offline", None, None, vehicle.created_at)
        )
        rows["certificates"].append(_certificate(world, vehicle.index, rng))
    for user in world.users:
        stamp = world.orgs[user.org].created_at + timedelta(days=1)
        rows["users"].append(
            {
                "user_id": user.user_id,
                "organization_id": world.orgs[user.org].organization_id,
                "username": user.username,
                "email": user.email,
                "password_hash": user.password_hash,
                "roles": [user.role],
                "permissions": _PERMISSIONS[user.role],
                "is_active": True,
                "last_login": origin - timedelta(hours=float(rng.uniform(1, 72))),
                "created_at": stamp,
                "updated_at": stamp,
            }
        )
    return rows


_PERMISSIONS = {
    "admin": ["fleet:write", "policy:write", "user:write", "vehicle:command"],
    "dispatcher": ["fleet:read", "trip:write", "vehicle:command", "alert:ack"],
    "technician": ["fleet:read", "maintenance:write", "alert:resolve"],
}


def _admin(world: World, org: int) -> str:
    return world.users_of(org, "admin")[0].username


def vehicle_row(
    world: World,
    index: int,
    status: str,
    location: tuple[float, float] | None,
    last_seen: datetime | None,
    updated: datetime,
) -> dict[str, Any]:
    """The fleet-core row of a vehicle in a given state."""
    v = world.vehicles[index]
    m = v.model
    sensors = {key: True for key in m.sensors}
    return {
        "vehicle_id": v.vehicle_id,
        "fleet_id": world.fleets[v.fleet].fleet_id,
        "asset_tag": v.asset_tag,
        "manufacturer": m.manufacturer,
        "model": m.model,
        "serial_number": v.serial_number,
        "vehicle_profile": vehicle_profile(m),
        "current_status": status,
        "current_latitude": None if location is None else round(location[0], 6),
        "current_longitude": None if location is None else round(location[1], 6),
        "last_seen": last_seen,
        "capabilities": {
            "autonomy_level": m.autonomy_level,
            "max_speed_kmh": m.max_speed_kmh,
            "payload_kg": m.max_load_kg,
            "ota_updates": True,
            "remote_lock": True,
        },
        "sensor_config": {
            "telemetry_interval_s": world.config.interval_s,
            "gateway_id": world.gateways[v.gateway],
            "tpms": any(k in sensors for k in TIRE_KEYS),
            "brake_wear_sensor": "brake_pad_mm" in sensors,
            "sensors": list(m.sensors),
            "firmware_version": FIRMWARE_V1,
        },
        "created_at": v.created_at,
        "updated_at": updated,
    }


def final_vehicle_rows(
    world: World, status: np.ndarray, lat: np.ndarray, lon: np.ndarray, last_seen_ms: np.ndarray
) -> list[dict[str, Any]]:
    """Vehicles as the Fleet OS sees them at the end: state and position of their last report."""
    config = world.config
    end = config.end
    rows = []
    for v in world.vehicles:
        seen = config.origin + timedelta(milliseconds=int(last_seen_ms[v.index]))
        location = (float(lat[v.index]), float(lon[v.index]))
        row = vehicle_row(world, v.index, STATUS_NAMES[int(status[v.index])], location, seen, end)
        if v.firmware_switch_s <= config.end_s:
            row["sensor_config"]["firmware_version"] = FIRMWARE_V2
            row["vehicle_profile"]["firmware_version"] = FIRMWARE_V2
        rows.append(row)
    return rows


def _certificate(world: World, index: int, rng: np.random.Generator) -> dict[str, Any]:
    """A device certificate: a real Ed25519 key pair and X.509 certificate, deterministic per seed."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519
    from cryptography.x509.oid import NameOID

    v = world.vehicles[index]
    org = world.orgs[v.org]
    key = ed25519.Ed25519PrivateKey.from_private_bytes(rng.bytes(32))
    ca_key = ed25519.Ed25519PrivateKey.from_private_bytes(
        hashlib.sha256(f"{world.config.seed}:{org.organization_id}".encode()).digest()
    )
    issued = v.created_at
    expires = issued + timedelta(days=730)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, v.asset_tag),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, org.name),
        ]
    )
    issuer = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{org.name} Device CA")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(int.from_bytes(rng.bytes(16), "big") >> 1)
        .not_valid_before(issued)
        .not_valid_after(expires)
        .sign(ca_key, None)
    )
    return {
        "certificate_id": new_id(rng),
        "vehicle_id": v.vehicle_id,
        "certificate_type": "device_identity",
        "certificate_pem": cert.public_bytes(serialization.Encoding.PEM).decode(),
        "private_key_pem": key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode(),
        "issued_at": issued,
        "expires_at": expires,
        "issuer": f"CN={org.name} Device CA",
        "subject": f"CN={v.asset_tag},O={org.name}",
        "is_revoked": False,
        "revoked_at": None,
        "created_at": issued,
        "updated_at": issued,
    }


def _secret(
    world: World,
    org: int,
    org_id: str,
    secret_type: str,
    i: int,
    stamp: datetime,
    rng: np.random.Generator,
) -> dict[str, Any]:
    """An organization secret, really encrypted (AES-GCM) under a per-tenant key."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    key = hashlib.sha256(f"{world.config.seed}:{org_id}:kek".encode()).digest()
    nonce = rng.bytes(12)
    token = base64.urlsafe_b64encode(rng.bytes(24)).decode()
    encrypted = nonce + AESGCM(key).encrypt(nonce, token.encode(), org_id.encode())
    return {
        "secret_id": new_id(rng),
        "organization_id": org_id,
        "secret_name": f"{secret_type}-{i + 1}",
        "secret_type": secret_type,
        "encrypted_value": base64.b64encode(encrypted).decode(),
        "encryption_key_id": f"kms://atlasmesh/{org_id}/kek-1",
        "expires_at": stamp + timedelta(days=365 * 2),
        "created_by": _admin(world, org),
        "access_policy": {"roles": ["admin"], "rotation_days": 90},
        "created_at": stamp,
        "updated_at": stamp,
    }
