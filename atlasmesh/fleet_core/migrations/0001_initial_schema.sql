-- version: 1.0.0
-- The seed's §9.1 schema extended to every operational entity of §2-§4, plus the Fleet
-- OS's own alerts and the §6 policy-decision log. Every table carries created_at and
-- updated_at (the extraction watermark); tables whose rows can disappear carry deleted_at.
-- Locations are latitude/longitude pairs because PostGIS is not assumed; the seed's
-- GEOMETRY(POINT, 4326) intent is documented in docs/fleet_core_schema.md.

CREATE TABLE organizations (
    organization_id {{uuid}} PRIMARY KEY,
    name VARCHAR(255) NOT NULL,
    sector VARCHAR(50) NOT NULL,
    configuration {{json}} DEFAULT '{}',
    entitlements {{json}} DEFAULT '{}',
    subscription_tier VARCHAR(50) DEFAULT 'basic',
    is_active {{bool}} NOT NULL DEFAULT TRUE,
    created_at {{timestamptz}} NOT NULL DEFAULT {{now}},
    updated_at {{timestamptz}} NOT NULL DEFAULT {{now}},
    deleted_at {{timestamptz}}
);

CREATE TABLE fleets (
    fleet_id {{uuid}} PRIMARY KEY,
    organization_id {{uuid}} NOT NULL REFERENCES organizations (organization_id),
    name VARCHAR(255) NOT NULL,
    sector VARCHAR(50) NOT NULL,
    configuration {{json}} DEFAULT '{}',
    status VARCHAR(50) DEFAULT 'active',
    metadata {{json}} DEFAULT '{}',
    created_at {{timestamptz}} NOT NULL DEFAULT {{now}},
    updated_at {{timestamptz}} NOT NULL DEFAULT {{now}},
    deleted_at {{timestamptz}}
);

CREATE TABLE vehicles (
    vehicle_id {{uuid}} PRIMARY KEY,
    fleet_id {{uuid}} NOT NULL REFERENCES fleets (fleet_id),
    asset_tag VARCHAR(100) NOT NULL UNIQUE,
    manufacturer VARCHAR(100) NOT NULL,
    model VARCHAR(100) NOT NULL,
    serial_number VARCHAR(100) NOT NULL UNIQUE,
    vehicle_profile {{json}} NOT NULL,
    current_status VARCHAR(50) DEFAULT 'offline',
    current_latitude {{float}} CHECK (current_latitude BETWEEN -90 AND 90),
    current_longitude {{float}} CHECK (current_longitude BETWEEN -180 AND 180),
    last_seen {{timestamptz}},
    capabilities {{json}} DEFAULT '{}',
    sensor_config {{json}} DEFAULT '{}',
    created_at {{timestamptz}} NOT NULL DEFAULT {{now}},
    updated_at {{timestamptz}} NOT NULL DEFAULT {{now}},
    deleted_at {{timestamptz}},
    -- Half a point is no location: both coordinates or neither.
    CHECK ((current_latitude IS NULL) = (current_longitude IS NULL))
);

CREATE TABLE routes (
    route_id {{uuid}} PRIMARY KEY,
    organization_id {{uuid}} NOT NULL REFERENCES organizations (organization_id),
    name VARCHAR(255) NOT NULL,
    waypoints {{json}} NOT NULL DEFAULT '[]',
    distance_km {{float}} CHECK (distance_km >= 0),
    estimated_duration_minutes INTEGER CHECK (estimated_duration_minutes >= 0),
    constraints {{json}} DEFAULT '{}',
    optimization_params {{json}} DEFAULT '{}',
    created_by VARCHAR(255),
    status VARCHAR(50) DEFAULT 'active',
    created_at {{timestamptz}} NOT NULL DEFAULT {{now}},
    updated_at {{timestamptz}} NOT NULL DEFAULT {{now}},
    deleted_at {{timestamptz}}
);

CREATE TABLE trips (
    trip_id {{uuid}} PRIMARY KEY,
    vehicle_id {{uuid}} NOT NULL REFERENCES vehicles (vehicle_id),
    route_id {{uuid}} NOT NULL REFERENCES routes (route_id),
    mission_type VARCHAR(50) NOT NULL,
    status VARCHAR(50) NOT NULL DEFAULT 'scheduled',
    origin_latitude {{float}} CHECK (origin_latitude BETWEEN -90 AND 90),
    origin_longitude {{float}} CHECK (origin_longitude BETWEEN -180 AND 180),
    destination_latitude {{float}} CHECK (destination_latitude BETWEEN -90 AND 90),
    destination_longitude {{float}} CHECK (destination_longitude BETWEEN -180 AND 180),
    scheduled_start {{timestamptz}},
    actual_start {{timestamptz}},
    scheduled_end {{timestamptz}},
    actual_end {{timestamptz}},
    trip_parameters {{json}} DEFAULT '{}',
    telemetry_summary {{json}} DEFAULT '{}',
    created_at {{timestamptz}} NOT NULL DEFAULT {{now}},
    updated_at {{timestamptz}} NOT NULL DEFAULT {{now}},
    deleted_at {{timestamptz}},
    CHECK ((origin_latitude IS NULL) = (origin_longitude IS NULL)),
    CHECK ((destination_latitude IS NULL) = (destination_longitude IS NULL))
);

CREATE TABLE policies (
    policy_id {{uuid}} PRIMARY KEY,
    organization_id {{uuid}} NOT NULL REFERENCES organizations (organization_id),
    name VARCHAR(255) NOT NULL,
    version VARCHAR(50) NOT NULL,
    rego_code TEXT,
    policy_schema {{json}} DEFAULT '{}',
    sector VARCHAR(50),
    environment VARCHAR(50),
    is_active {{bool}} NOT NULL DEFAULT TRUE,
    effective_from {{timestamptz}},
    effective_until {{timestamptz}},
    created_by VARCHAR(255),
    created_at {{timestamptz}} NOT NULL DEFAULT {{now}},
    updated_at {{timestamptz}} NOT NULL DEFAULT {{now}},
    deleted_at {{timestamptz}}
);

-- Append-only: a decision, once logged, is evidence and is never deleted.
CREATE TABLE policy_decisions (
    decision_id {{uuid}} PRIMARY KEY,
    policy_id {{uuid}} NOT NULL REFERENCES policies (policy_id),
    vehicle_id {{uuid}} NOT NULL REFERENCES vehicles (vehicle_id),
    trip_id {{uuid}} REFERENCES trips (trip_id),
    action VARCHAR(50) NOT NULL,
    decision VARCHAR(5) NOT NULL CHECK (decision IN ('ALLOW', 'DENY')),
    reason TEXT,
    constraints {{json}} DEFAULT '{}',
    context {{json}} DEFAULT '{}',
    decided_at {{timestamptz}} NOT NULL,
    created_at {{timestamptz}} NOT NULL DEFAULT {{now}},
    updated_at {{timestamptz}} NOT NULL DEFAULT {{now}}
);

CREATE TABLE vehicle_commands (
    command_id {{uuid}} PRIMARY KEY,
    vehicle_id {{uuid}} NOT NULL REFERENCES vehicles (vehicle_id),
    command_type VARCHAR(50) NOT NULL,
    parameters {{json}} DEFAULT '{}',
    status VARCHAR(50) NOT NULL DEFAULT 'pending',
    issued_at {{timestamptz}} NOT NULL,
    executed_at {{timestamptz}},
    expires_at {{timestamptz}},
    issued_by VARCHAR(255),
    response_data {{json}},
    priority VARCHAR(20) DEFAULT 'normal',
    created_at {{timestamptz}} NOT NULL DEFAULT {{now}},
    updated_at {{timestamptz}} NOT NULL DEFAULT {{now}}
);

CREATE TABLE maintenance_records (
    maintenance_id {{uuid}} PRIMARY KEY,
    vehicle_id {{uuid}} NOT NULL REFERENCES vehicles (vehicle_id),
    maintenance_type VARCHAR(20) NOT NULL
        CHECK (maintenance_type IN ('scheduled', 'unscheduled')),
    component VARCHAR(100),
    description TEXT,
    scheduled_date {{timestamptz}},
    completed_date {{timestamptz}},
    performed_by VARCHAR(255),
    parts_used {{json}} DEFAULT '[]',
    cost {{float}} CHECK (cost >= 0),
    downtime_hours {{float}} CHECK (downtime_hours >= 0),
    diagnostic_results {{json}} DEFAULT '{}',
    status VARCHAR(50) NOT NULL DEFAULT 'scheduled',
    created_at {{timestamptz}} NOT NULL DEFAULT {{now}},
    updated_at {{timestamptz}} NOT NULL DEFAULT {{now}},
    deleted_at {{timestamptz}}
);

CREATE TABLE alerts (
    alert_id {{uuid}} PRIMARY KEY,
    vehicle_id {{uuid}} NOT NULL REFERENCES vehicles (vehicle_id),
    trip_id {{uuid}} REFERENCES trips (trip_id),
    alert_type VARCHAR(50) NOT NULL,
    severity VARCHAR(20) NOT NULL,
    message TEXT,
    context_data {{json}} DEFAULT '{}',
    triggered_at {{timestamptz}} NOT NULL,
    acknowledged_at {{timestamptz}},
    resolved_at {{timestamptz}},
    acknowledged_by VARCHAR(255),
    resolved_by VARCHAR(255),
    status VARCHAR(20) NOT NULL DEFAULT 'triggered',
    created_at {{timestamptz}} NOT NULL DEFAULT {{now}},
    updated_at {{timestamptz}} NOT NULL DEFAULT {{now}}
);

CREATE TABLE users (
    user_id {{uuid}} PRIMARY KEY,
    organization_id {{uuid}} NOT NULL REFERENCES organizations (organization_id),
    username VARCHAR(255) NOT NULL UNIQUE,
    email VARCHAR(255),
    password_hash TEXT,
    roles {{json}} DEFAULT '[]',
    permissions {{json}} DEFAULT '[]',
    is_active {{bool}} NOT NULL DEFAULT TRUE,
    last_login {{timestamptz}},
    created_at {{timestamptz}} NOT NULL DEFAULT {{now}},
    updated_at {{timestamptz}} NOT NULL DEFAULT {{now}},
    deleted_at {{timestamptz}}
);

CREATE TABLE certificates (
    certificate_id {{uuid}} PRIMARY KEY,
    vehicle_id {{uuid}} NOT NULL REFERENCES vehicles (vehicle_id),
    certificate_type VARCHAR(50) NOT NULL,
    certificate_pem TEXT,
    private_key_pem TEXT,
    issued_at {{timestamptz}} NOT NULL,
    expires_at {{timestamptz}} NOT NULL,
    issuer VARCHAR(255),
    subject VARCHAR(255),
    is_revoked {{bool}} NOT NULL DEFAULT FALSE,
    revoked_at {{timestamptz}},
    created_at {{timestamptz}} NOT NULL DEFAULT {{now}},
    updated_at {{timestamptz}} NOT NULL DEFAULT {{now}}
);

CREATE TABLE secrets (
    secret_id {{uuid}} PRIMARY KEY,
    organization_id {{uuid}} NOT NULL REFERENCES organizations (organization_id),
    secret_name VARCHAR(255) NOT NULL,
    secret_type VARCHAR(50) NOT NULL,
    encrypted_value TEXT,
    encryption_key_id VARCHAR(255),
    expires_at {{timestamptz}},
    created_by VARCHAR(255),
    access_policy {{json}} DEFAULT '{}',
    created_at {{timestamptz}} NOT NULL DEFAULT {{now}},
    updated_at {{timestamptz}} NOT NULL DEFAULT {{now}},
    deleted_at {{timestamptz}}
);

-- Incremental extraction filters every table on updated_at.
CREATE INDEX idx_organizations_updated_at ON organizations (updated_at);
CREATE INDEX idx_fleets_updated_at ON fleets (updated_at);
CREATE INDEX idx_vehicles_updated_at ON vehicles (updated_at);
CREATE INDEX idx_routes_updated_at ON routes (updated_at);
CREATE INDEX idx_trips_updated_at ON trips (updated_at);
CREATE INDEX idx_policies_updated_at ON policies (updated_at);
CREATE INDEX idx_policy_decisions_updated_at ON policy_decisions (updated_at);
CREATE INDEX idx_vehicle_commands_updated_at ON vehicle_commands (updated_at);
CREATE INDEX idx_maintenance_records_updated_at ON maintenance_records (updated_at);
CREATE INDEX idx_alerts_updated_at ON alerts (updated_at);
CREATE INDEX idx_users_updated_at ON users (updated_at);
CREATE INDEX idx_certificates_updated_at ON certificates (updated_at);
CREATE INDEX idx_secrets_updated_at ON secrets (updated_at);

-- PostgreSQL does not index foreign keys by itself; joins and parent deletes need them.
CREATE INDEX idx_fleets_organization_id ON fleets (organization_id);
CREATE INDEX idx_vehicles_fleet_id ON vehicles (fleet_id);
CREATE INDEX idx_routes_organization_id ON routes (organization_id);
CREATE INDEX idx_trips_vehicle_id ON trips (vehicle_id);
CREATE INDEX idx_trips_route_id ON trips (route_id);
CREATE INDEX idx_policies_organization_id ON policies (organization_id);
CREATE INDEX idx_policy_decisions_policy_id ON policy_decisions (policy_id);
CREATE INDEX idx_policy_decisions_vehicle_id ON policy_decisions (vehicle_id);
CREATE INDEX idx_policy_decisions_trip_id ON policy_decisions (trip_id);
CREATE INDEX idx_vehicle_commands_vehicle_id ON vehicle_commands (vehicle_id);
CREATE INDEX idx_maintenance_records_vehicle_id ON maintenance_records (vehicle_id);
CREATE INDEX idx_alerts_vehicle_id ON alerts (vehicle_id);
CREATE INDEX idx_alerts_trip_id ON alerts (trip_id);
CREATE INDEX idx_users_organization_id ON users (organization_id);
CREATE INDEX idx_certificates_vehicle_id ON certificates (vehicle_id);
CREATE INDEX idx_secrets_organization_id ON secrets (organization_id);

-- The seed's own indexes (its GIST index on current_location needs PostGIS).
CREATE INDEX idx_vehicles_status ON vehicles (current_status);
CREATE INDEX idx_vehicles_last_seen ON vehicles (last_seen);
CREATE INDEX idx_trips_scheduled_start ON trips (scheduled_start);
CREATE INDEX idx_policy_decisions_decided_at ON policy_decisions (decided_at);
CREATE INDEX idx_alerts_triggered_at ON alerts (triggered_at);
