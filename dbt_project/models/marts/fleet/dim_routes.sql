{#- One row per planned route: length, planned duration and speed, end points and constraints. -#}
with routes as (
    select
        *,
        JSONExtractArrayRaw(waypoints) as points
    from {{ ref('stg_fleet_core__routes') }}
)

select
    route_id,
    organization_id,
    name as route_name,
    status,
    distance_km,
    estimated_duration_minutes,
    if(
        estimated_duration_minutes > 0, distance_km / (estimated_duration_minutes / 60.0), null
    ) as planned_speed_kmh,
    length(points) as waypoint_count,
    JSONExtract(points[1], 'lat', 'Nullable(Float64)') as start_latitude,
    JSONExtract(points[1], 'lon', 'Nullable(Float64)') as start_longitude,
    JSONExtract(points[-1], 'lat', 'Nullable(Float64)') as end_latitude,
    JSONExtract(points[-1], 'lon', 'Nullable(Float64)') as end_longitude,
    JSONExtract(constraints, 'max_speed_kmh', 'Nullable(Float64)') as max_speed_kmh,
    nullIf(JSONExtractString(optimization_params, 'objective'), '') as optimization_objective,
    JSONExtract(optimization_params, 'avoid_tolls', 'Nullable(Bool)') as avoid_tolls,
    created_by,
    created_at,
    updated_at,
    deleted_at
from routes
