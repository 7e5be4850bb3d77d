{#- One row per fleet: its tenant, sector, depot and size. -#}
with fleets as (
    select * from {{ ref('stg_fleet_core__fleets') }}
),

organizations as (
    select organization_id, name from {{ ref('stg_fleet_core__organizations') }}
),

vehicles as (
    select fleet_id, count() as vehicle_count
    from {{ ref('stg_fleet_core__vehicles') }}
    where deleted_at is null
    group by fleet_id
)

select
    fleets.fleet_id as fleet_id,
    fleets.organization_id as organization_id,
    fleets.name as fleet_name,
    organizations.name as organization_name,
    fleets.sector as sector,
    fleets.status as status,
    nullIf(JSONExtractString(fleets.configuration, 'city'), '') as city,
    JSONExtract(fleets.configuration, 'depot', 'lat', 'Nullable(Float64)') as depot_latitude,
    JSONExtract(fleets.configuration, 'depot', 'lon', 'Nullable(Float64)') as depot_longitude,
    JSONExtract(fleets.metadata, 'timezone_offset_h', 'Nullable(Int64)') as timezone_offset_h,
    coalesce(vehicles.vehicle_count, 0) as vehicle_count,
    fleets.created_at as created_at,
    fleets.updated_at as updated_at,
    fleets.deleted_at as deleted_at
from fleets
inner join organizations on fleets.organization_id = organizations.organization_id
left join vehicles on fleets.fleet_id = vehicles.fleet_id
