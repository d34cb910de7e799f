//! The stored form of a resource shared by the backends that keep JSON (etcd, raft): everything
//! except what the key and the backend's own version already say.

use model::{Meta, Resource, ResourceKey, Timestamp};
use serde_json::{Map, Value};

use crate::{Result, StoreError};

pub fn encode(resource: &Resource) -> Value {
    let mut record = Map::new();
    record.insert("spec".into(), resource.spec.clone());
    if let Some(status) = &resource.status {
        record.insert("status".into(), status.clone());
    }
    let labels = resource
        .meta
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    record.insert("labels".into(), Value::Object(labels));
    // Nanoseconds as a string: i128 does not fit a JSON number losslessly everywhere.
    record.insert(
        "creationTime".into(),
        Value::String(resource.meta.creation_time.0.to_string()),
    );
    record.insert(
        "modificationTime".into(),
        Value::String(resource.meta.modification_time.0.to_string()),
    );
    Value::Object(record)
}

pub fn decode(key: ResourceKey, version: u64, value: Value) -> Result<Resource> {
    let corrupt = |message: String| StoreError::Corrupt {
        key: key.clone(),
        message,
    };
    let Value::Object(mut record) = value else {
        return Err(corrupt("value is not a JSON object".into()));
    };
    let time = |record: &Map<String, Value>, field: &str| -> Result<Timestamp> {
        record
            .get(field)
            .and_then(Value::as_str)
            .and_then(|s| s.parse::<i128>().ok())
            .map(Timestamp)
            .ok_or_else(|| corrupt(format!("{field} is missing or not a nanosecond count")))
    };
    let creation_time = time(&record, "creationTime")?;
    let modification_time = time(&record, "modificationTime")?;
    let labels = match record.remove("labels") {
        None | Some(Value::Null) => Default::default(),
        Some(Value::Object(map)) => map
            .into_iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k, s)),
                _ => Err(corrupt(format!("label {k:?} is not a string"))),
            })
            .collect::<Result<_>>()?,
        Some(_) => return Err(corrupt("labels is not an object".into())),
    };
    let spec = record
        .remove("spec")
        .ok_or_else(|| corrupt("spec is missing".into()))?;
    let status = record.remove("status").filter(|s| !s.is_null());
    Ok(Resource {
        kind: key.kind,
        meta: Meta {
            name: key.name,
            mesh: key.mesh,
            version,
            labels,
            creation_time,
            modification_time,
        },
        spec,
        status,
    })
}
