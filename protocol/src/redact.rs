//! [`redacted_debug!`]: `Debug` for structs that hold a secret (a token, a seed), printing
//! `<redacted>` in its place (house rule: nothing secret in `Debug` or logs).

/// Implements `Debug` for a struct: the named fields as usual, each `secret` field as
/// `<redacted>`, and `..` at the end for the fields left out
/// (`finish_non_exhaustive`).
///
/// ```
/// struct Login {
///     name: String,
///     token: String,
/// }
/// gelunet_protocol::redacted_debug!(Login { name } secret { token });
/// let l = Login { name: "alice".into(), token: "hunter2".into() };
/// assert_eq!(format!("{l:?}"), r#"Login { name: "alice", token: "<redacted>" }"#);
/// ```
#[macro_export]
macro_rules! redacted_debug {
    (@finish $d:ident) => {
        $d.finish()
    };
    (@finish $d:ident ..) => {
        $d.finish_non_exhaustive()
    };
    ($ty:ident { $($field:ident),* $(,)? } secret { $($secret:ident),* $(,)? } $($dots:tt)?) => {
        impl ::core::fmt::Debug for $ty {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                let mut d = f.debug_struct(stringify!($ty));
                $(d.field(stringify!($field), &self.$field);)*
                $(d.field(stringify!($secret), &"<redacted>");)*
                $crate::redacted_debug!(@finish d $($dots)?)
            }
        }
    };
}

#[cfg(test)]
mod tests {
    #[allow(dead_code)]
    struct Config {
        server: u16,
        token: String,
        seed: [u8; 4],
        other: u8,
    }
    redacted_debug!(Config { server } secret { token, seed } ..);

    #[test]
    fn secrets_are_redacted_and_left_out_fields_marked() {
        let c = Config {
            server: 7,
            token: "s3cr3t".into(),
            seed: [9; 4],
            other: 1,
        };
        let shown = format!("{c:?}");
        assert_eq!(
            shown,
            r#"Config { server: 7, token: "<redacted>", seed: "<redacted>", .. }"#
        );
        assert!(!shown.contains("s3cr3t"));
    }
}
