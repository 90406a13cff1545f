//! Rate-limit keys, exactly as ARCHITECTURE §6 names them.

/// `sba:rl:{tenant}|{ip}|{METHOD}|{route template}`. `tenant` is `-` for unauthenticated
/// requests (limited per IP); `route` must be the route *template* (`/v1/runs/{run_id}`),
/// never the raw path, so ids do not create a key each.
pub fn http_key(tenant: Option<&str>, ip: &str, method: &str, route: &str) -> String {
    format!("sba:rl:{}|{ip}|{}|{route}", tenant.unwrap_or("-"), method.to_ascii_uppercase())
}

/// `sba:rl:ws:{tenant}:{user}:{ip}:{event}` for one WebSocket operation.
pub fn ws_key(tenant: &str, user: &str, ip: &str, event: &str) -> String {
    format!("sba:rl:ws:{tenant}:{user}:{ip}:{event}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_keys_use_the_route_template_and_an_upper_case_method() {
        assert_eq!(
            http_key(Some("t-1"), "203.0.113.7", "get", "/v1/runs/{run_id}"),
            "sba:rl:t-1|203.0.113.7|GET|/v1/runs/{run_id}"
        );
        assert_eq!(http_key(None, "::1", "POST", "/v1/runs"), "sba:rl:-|::1|POST|/v1/runs");
    }

    #[test]
    fn ws_keys_name_tenant_user_ip_and_event() {
        assert_eq!(ws_key("t-1", "alice", "10.0.0.1", "subscribe"), "sba:rl:ws:t-1:alice:10.0.0.1:subscribe");
    }
}
