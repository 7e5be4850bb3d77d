{#- Telemetry events, one row per accepted event, with the columns fleet metrics read. -#}
with source as (
    select * from {{ source('telemetry', 'vehicle_telemetry') }}
)

select
    telemetry_id,
    vehicle_id,
    recorded_at,
    ingested_at,
    latitude,
    longitude,
    speed_kmh,
    heading_degrees,
    battery_level_percent,
    fuel_level_percent,
    odometer_km,
    cast(operational_status as String) as operational_status,
    diagnostic_codes,
    cast(firmware_version as Nullable(String)) as firmware_version,
    cast(schema_version as String) as schema_version,
    motor_temp_c,
    engine_temp_c,
    battery_temp_c,
    coolant_temp_c,
    tire_pressure_fl_kpa,
    tire_pressure_fr_kpa,
    tire_pressure_rl_kpa,
    tire_pressure_rr_kpa,
    vibration_rms_g,
    brake_pad_mm,
    aux_battery_v,
    load_kg,
    energy_rate
from source
