-- The audit log read by time (the dashboard's last hour, `history --since`)
-- without reading it all: `at` is an RFC 3339 UTC time, so its text order is
-- its time order.
CREATE INDEX audit_log_at ON audit_log (at);
