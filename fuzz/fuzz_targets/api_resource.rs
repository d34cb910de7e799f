//! A PUT body of the HTTP API: UTF-8, JSON or YAML, checked against the URL's type, name and
//! mesh, decoded into a resource and validated (`api::decode_put_body`, what every
//! `PUT /[meshes/{mesh}/]{plural}/{name}` runs before it touches the store).
//!
//! Input: one byte choosing the URL's resource type, then `name \n mesh \n body`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use model::ResourceKey;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let mut parts = rest.splitn(3, |b| *b == b'\n');
    let (Some(name), Some(mesh), Some(body)) = (parts.next(), parts.next(), parts.next()) else {
        return;
    };
    // Path segments reach the handler percent-decoded, as strings.
    let (Ok(name), Ok(mesh)) = (std::str::from_utf8(name), std::str::from_utf8(mesh)) else {
        return;
    };
    let key = ResourceKey::new(fuzz::resource_type(selector), mesh, name);
    if let Ok(resource) = api::decode_put_body(body, &key) {
        // What the API answers a GET with afterwards must serialize too.
        let _ = resource.to_value();
    }
});
