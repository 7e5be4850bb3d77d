{#- One row per tenant: its sector, subscription, operating hours and size. -#}
with organizations as (
    select * from {{ ref('stg_fleet_core__organizations') }}
),

fleets as (
    select organization_id, count() as fleet_count
    from {{ ref('stg_fleet_core__fleets') }}
    where deleted_at is null
    group by organization_id
),

vehicles as (
    select organization_id, count() as vehicle_count
    from {{ ref('int_vehicles_enriched') }}
    where deleted_at is null
    group by organization_id
)

select
    organizations.organization_id as organization_id,
    organizations.name as organization_name,
    organizations.sector as sector,
    organizations.subscription_tier as subscription_tier,
    organizations.is_active as is_active,
    JSONExtract(organizations.configuration, 'operating_hours', 'open', 'Nullable(Int64)')
        as open_hour,
    JSONExtract(organizations.configuration, 'operating_hours', 'close', 'Nullable(Int64)')
        as close_hour,
    JSONExtract(organizations.configuration, 'energy_reserve_percent', 'Nullable(Float64)')
        as energy_reserve_percent,
    JSONExtract(organizations.entitlements, 'max_vehicles', 'Nullable(Int64)') as max_vehicles,
    JSONExtract(organizations.entitlements, 'api_access', 'Nullable(Bool)') as api_access,
    coalesce(fleets.fleet_count, 0) as fleet_count,
    coalesce(vehicles.vehicle_count, 0) as vehicle_count,
    organizations.created_at as created_at,
    organizations.updated_at as updated_at,
    organizations.deleted_at as deleted_at
from organizations
left join fleets on organizations.organization_id = fleets.organization_id
left join vehicles on organizations.organization_id = vehicles.organization_id
