# Reads results.jsonl (slurped) and prints one table: every chat-rs figure
# beside the reference figure of the same scenario, and chat-rs / reference.
def metrics:
  if .scenario == "W1" then
    [["deliveries/s", .deliveries_per_s], ["p50 ms", .p50_ms], ["p99 ms", .p99_ms],
     ["p99.9 ms", .p999_ms], ["lost", .lost], ["duplicated", .duplicated],
     ["connect failures", .connect_failures], ["server RSS MiB", ((.server_rss_bytes // 0) / 1048576 | . * 10 | round / 10)],
     ["server CPU %", .server_cpu_pct], ["generator CPU %", .generator_cpu_pct]]
  elif .scenario == "W2" or .scenario == "W5" then
    [["saturation deliveries/s", .deliveries_per_s], ["saturation msg/s per sender", .saturation_rate_per_sender],
     ["p99 ms at saturation", .p99_ms], ["server CPU % at saturation", .server_cpu_pct], ["generator CPU % at saturation", .generator_cpu_pct], ["connect failures", .connect_failures]]
  elif .scenario == "W3" then
    [["sockets open", .still_open], ["connect failures", .connect_failures],
     ["server bytes per socket", .server_bytes_per_socket], ["connect s", (.connect_secs * 10 | round / 10)]]
  elif .scenario == "W4ws" then
    [["WebSocket appends/s, 50 sockets (p99 <= 100 ms)", .acks_per_s], ["ack p50 ms", .ack_p50_ms], ["ack p99 ms", .ack_p99_ms],
     ["server CPU %", .server_cpu_pct], ["generator CPU %", .generator_cpu_pct]]
  elif .scenario == "W4" then
    [["appends/s one room", .one_room_appends_per_s], ["p99 ms one room", .one_room_p99_ms],
     ["appends/s room per writer", .room_per_writer_appends_per_s], ["p99 ms room per writer", .room_per_writer_p99_ms]]
  else [] end;
def fmt: if . == null then "n/a" elif type == "number" then (. * 100 | round / 100 | tostring) else tostring end;
def ratio($a; $b): if ($a | type) == "number" and ($b | type) == "number" and $b != 0 then ($a / $b * 100 | round / 100 | tostring) else "n/a" end;

. as $all
| "| scenario | backend | figure | chat-rs | reference | ratio |",
  "|---|---|---|---|---|---|",
  ( $all[] | select(.target == "chat-rs") as $c
    | ($all | map(select(.target == "reference" and .scenario == $c.scenario)) | last) as $r
    | [($c | metrics), (($r // {}) | metrics)] | transpose[]
    | select(.[0] != null)
    | "| \($c.scenario) | \($c.backend)\(if $c.instances == 2 then " (2 inst.)" else "" end) | \(.[0][0]) | \(.[0][1] | fmt) | \(.[1][1] | fmt) | \(ratio(.[0][1]; .[1][1])) |" )
