-- Append one event. KEYS: stream, its sequence counter, its dedupe ids.
-- ARGV: maxlen ('' = unbounded), dedupe id ('' = none), event JSON. Returns the sequence.
return append_event(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2], ARGV[3])
