{#- Vehicles with their fleet, tenant and the JSON of their profile parsed into columns. -#}
with vehicles as (
    select * from {{ ref('stg_fleet_core__vehicles') }}
),

fleets as (
    select * from {{ ref('stg_fleet_core__fleets') }}
),

organizations as (
    select * from {{ ref('stg_fleet_core__organizations') }}
)

select
    vehicles.vehicle_id as vehicle_id,
    fleets.organization_id as organization_id,
    vehicles.fleet_id as fleet_id,
    vehicles.asset_tag as asset_tag,
    vehicles.serial_number as serial_number,
    vehicles.manufacturer as manufacturer,
    vehicles.model as model,
    JSONExtractString(vehicles.vehicle_profile, 'powertrain') as powertrain,
    -- What the battery_level / fuel_level telemetry of this vehicle reports.
    if(JSONExtractString(vehicles.vehicle_profile, 'powertrain') = 'ev', 'battery', 'fuel')
        as energy_kind,
    JSONExtract(vehicles.vehicle_profile, 'battery_kwh', 'Nullable(Float64)') as battery_kwh,
    JSONExtract(vehicles.vehicle_profile, 'tank_l', 'Nullable(Float64)') as tank_l,
    JSONExtract(vehicles.vehicle_profile, 'nominal_consumption', 'Nullable(Float64)')
        as nominal_consumption,
    nullIf(JSONExtractString(vehicles.vehicle_profile, 'consumption_unit'), '')
        as consumption_unit,
    JSONExtract(vehicles.vehicle_profile, 'max_load_kg', 'Nullable(Float64)') as max_load_kg,
    -- The profile carries the firmware since the OTA rollout; sensor_config always did.
    coalesce(
        nullIf(JSONExtractString(vehicles.vehicle_profile, 'firmware_version'), ''),
        nullIf(JSONExtractString(vehicles.sensor_config, 'firmware_version'), '')
    ) as firmware_version,
    JSONExtract(vehicles.capabilities, 'autonomy_level', 'Nullable(Int64)') as autonomy_level,
    JSONExtract(vehicles.capabilities, 'max_speed_kmh', 'Nullable(Float64)') as max_speed_kmh,
    JSONExtract(vehicles.sensor_config, 'telemetry_interval_s', 'Nullable(Float64)')
        as telemetry_interval_s,
    nullIf(JSONExtractString(vehicles.sensor_config, 'gateway_id'), '') as gateway_id,
    vehicles.current_status as current_status,
    vehicles.current_latitude as current_latitude,
    vehicles.current_longitude as current_longitude,
    vehicles.last_seen as last_seen,
    fleets.name as fleet_name,
    organizations.name as organization_name,
    fleets.sector as sector,
    nullIf(JSONExtractString(fleets.configuration, 'city'), '') as city,
    JSONExtract(fleets.metadata, 'timezone_offset_h', 'Nullable(Int64)') as timezone_offset_h,
    vehicles.created_at as created_at,
    vehicles.updated_at as updated_at,
    vehicles.deleted_at as deleted_at
from vehicles
inner join fleets on vehicles.fleet_id = fleets.fleet_id
inner join organizations on fleets.organization_id = organizations.organization_id
