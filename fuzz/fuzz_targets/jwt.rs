//! Tokens as callers present them: user tokens (the API's bearer), zone tokens (KDS and zone
//! proxies, checked with the signing key or the public key global published), dataplane tokens
//! (bootstrap and ADS), and the unverified read of a zone token's control plane. All verify
//! against one fixed key (fuzz/fixtures), so the committed seeds are valid tokens.
//!
//! Input: one byte choosing the verifier, then the token.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;

struct Setup {
    rt: tokio::runtime::Runtime,
    keys: fuzz::TokenKeys,
}

static SETUP: LazyLock<Setup> = LazyLock::new(|| {
    let rt = fuzz::runtime();
    let keys = rt.block_on(fuzz::token_keys());
    Setup { rt, keys }
});

fuzz_target!(|data: &[u8]| {
    let Some((&selector, token)) = data.split_first() else {
        return;
    };
    // Tokens arrive as header values or JSON strings: text.
    let Ok(token) = std::str::from_utf8(token) else {
        return;
    };
    let Setup { rt, keys } = &*SETUP;
    rt.block_on(async {
        match selector % 6 {
            0 => {
                let _ = security::user::authenticate(&keys.user, token).await;
            }
            1 | 2 => {
                let verifier = if selector % 6 == 1 {
                    &keys.zone
                } else {
                    &keys.zone_public
                };
                let scope = security::zone::SCOPES[usize::from(selector / 6) % 3];
                let _ = security::zone::verify_zone_token(verifier, token, fuzz::ZONE, scope).await;
            }
            3 => {
                let _ = security::zone::claimed_control_plane(token);
            }
            _ => {
                // A sidecar's token, or a zone proxy's of each type.
                let (name, tags, proxy_type) = if selector % 6 == 4 {
                    ("web-1", fuzz::web_tags(), "")
                } else {
                    let proxy_type =
                        security::dataplane::PROXY_TYPES[usize::from(selector / 6) % 3];
                    ("ingress-1", Default::default(), proxy_type)
                };
                let _ = security::dataplane::verify_dataplane_token(
                    &keys.dataplane,
                    token,
                    name,
                    "default",
                    &tags,
                    proxy_type,
                )
                .await;
            }
        }
    });
});
