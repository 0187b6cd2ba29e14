//! Parsing of the control API's request bodies, apart from the HTTP plumbing in
//! [`server`](crate::server) so the fuzz target `control_api` can reach it. The join body is
//! parsed by [`Sfu::join`](crate::Sfu::join) itself.

/// Parses a leave body: `{"ssrc": N}` with N as number or string, signed or unsigned 32-bit.
pub fn parse_leave(body: &[u8]) -> Result<u32, String> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("invalid json: {e}"))?;
    let ssrc = v.get("ssrc").ok_or("missing field: ssrc")?;
    let n = match ssrc {
        serde_json::Value::Number(n) => n.as_i64(),
        serde_json::Value::String(s) => s.parse::<i64>().ok(),
        _ => None,
    }
    .ok_or("invalid field ssrc: not an integer")?;
    if (i64::from(i32::MIN)..=i64::from(u32::MAX)).contains(&n) {
        // Negative values are int32 bit patterns (MTProto `int`).
        Ok(n as u32)
    } else {
        Err("invalid field ssrc: out of 32-bit range".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leave_body_variants() {
        assert_eq!(parse_leave(br#"{"ssrc": 5}"#), Ok(5));
        assert_eq!(parse_leave(br#"{"ssrc": "7"}"#), Ok(7));
        assert_eq!(parse_leave(br#"{"ssrc": -1}"#), Ok(u32::MAX));
        assert!(parse_leave(br#"{"ssrc": 1e40}"#).is_err());
        assert!(parse_leave(br#"{"ssrc": true}"#).is_err());
        assert!(parse_leave(br#"{}"#).is_err());
        assert!(parse_leave(b"{").is_err());
    }
}
