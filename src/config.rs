//! Options given at load time: `--loadmodule libredis_ratelimit.so NAME VALUE …`.
//!
//! | option | values | default | effect |
//! | --- | --- | --- | --- |
//! | `CL-THROTTLE` | `yes`, `no` | `no` | also register RATELIMIT.THROTTLE as `CL.THROTTLE`, redis-cell's name |
//!
//! Names and values are case-insensitive. An unknown option, a bad value or
//! a missing one refuses the load, with the reason in the server log.

/// The options in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Options {
    /// Register `CL.THROTTLE` too.
    pub cl_throttle: bool,
}

/// Parses the module's load-time arguments, given as bytes.
pub fn parse<A: AsRef<[u8]>>(args: &[A]) -> Result<Options, String> {
    let mut options = Options::default();
    let mut args = args.iter().map(AsRef::as_ref);
    while let Some(name) = args.next() {
        let shown = String::from_utf8_lossy(name);
        let value = args
            .next()
            .ok_or_else(|| format!("module option {shown} has no value"))?;
        if name.eq_ignore_ascii_case(b"CL-THROTTLE") {
            options.cl_throttle = parse_bool(value)
                .ok_or_else(|| format!("module option {shown} must be yes or no"))?;
        } else {
            return Err(format!(
                "unknown module option {shown} (known: CL-THROTTLE)"
            ));
        }
    }
    Ok(options)
}

fn parse_bool(value: &[u8]) -> Option<bool> {
    if value.eq_ignore_ascii_case(b"yes") {
        Some(true)
    } else if value.eq_ignore_ascii_case(b"no") {
        Some(false)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_without_arguments() {
        let none: [&str; 0] = [];
        assert_eq!(parse(&none), Ok(Options::default()));
    }

    #[test]
    fn reads_cl_throttle_in_any_case() {
        assert!(parse(&["CL-THROTTLE", "yes"]).unwrap().cl_throttle);
        assert!(parse(&["cl-throttle", "YES"]).unwrap().cl_throttle);
        assert!(!parse(&["Cl-Throttle", "no"]).unwrap().cl_throttle);
    }

    #[test]
    fn refuses_what_it_does_not_know() {
        assert!(parse(&["CL-THROTTLE"]).unwrap_err().contains("no value"));
        assert!(parse(&["CL-THROTTLE", "1"])
            .unwrap_err()
            .contains("yes or no"));
        assert!(parse(&["FAST", "yes"]).unwrap_err().contains("unknown"));
    }
}
