//! Every API request the operator makes, counted at its client by verb and resource: what
//! `/metrics` shows, and how tests prove that a reconcile with nothing to do asks the API
//! server nothing.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Requests so far, by `(verb, resource)`; verbs are Kubernetes' (get, list, watch, create,
/// update, patch, delete, deletecollection), resources the plural, with `/status` or another
/// subresource when there is one.
#[derive(Debug, Default)]
pub struct ApiRequests {
    counts: Mutex<BTreeMap<(String, String), u64>>,
}

impl ApiRequests {
    pub fn record(&self, method: &http::Method, uri: &http::Uri) {
        let key = classify(method, uri.path(), uri.query().unwrap_or(""));
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        *counts.entry(key).or_default() += 1;
    }

    /// Counts so far, by `(verb, resource)`.
    pub fn snapshot(&self) -> BTreeMap<(String, String), u64> {
        self.counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// GETs and LISTs so far (watches aside: they are long-lived streams, not reads).
    pub fn reads(&self) -> u64 {
        self.snapshot()
            .iter()
            .filter(|((verb, _), _)| verb == "get" || verb == "list")
            .map(|(_, n)| n)
            .sum()
    }
}

/// A client whose every request is counted in the returned [`ApiRequests`].
pub fn counted_client(
    config: kube::Config,
) -> Result<(kube::Client, Arc<ApiRequests>), kube::Error> {
    let requests = Arc::new(ApiRequests::default());
    let counter = requests.clone();
    let count =
        tower::util::MapRequestLayer::new(move |request: http::Request<kube::client::Body>| {
            counter.record(request.method(), request.uri());
            request
        });
    let client = kube::client::ClientBuilder::try_from(config)?
        .with_layer(&count)
        .build();
    Ok((client, requests))
}

/// The verb and resource of a request to `path` (`/api/v1/...` or `/apis/<group>/<v>/...`).
fn classify(method: &http::Method, path: &str, query: &str) -> (String, String) {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let rest = match segments.as_slice() {
        ["api", _version, rest @ ..] => rest,
        ["apis", _group, _version, rest @ ..] => rest,
        _ => return (method.as_str().to_ascii_lowercase(), "other".into()),
    };
    // Namespaced: namespaces/<ns>/<resource>/...; the namespaces themselves otherwise.
    let rest = match rest {
        ["namespaces", _ns, resource, more @ ..] => [&[*resource][..], more].concat(),
        other => other.to_vec(),
    };
    let (resource, named) = match rest.as_slice() {
        [resource] => (resource.to_string(), false),
        [resource, _name] => (resource.to_string(), true),
        [resource, _name, sub, ..] => (format!("{resource}/{sub}"), true),
        [] => ("other".into(), false),
    };
    let watch = query
        .split('&')
        .any(|kv| kv == "watch=true" || kv == "watch=1");
    let verb = match (method.as_str(), named) {
        ("GET", _) if watch => "watch",
        ("GET", true) => "get",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        (other, _) => return (other.to_ascii_lowercase(), resource),
    };
    (verb.to_string(), resource)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(method: http::Method, path: &str, query: &str) -> (String, String) {
        classify(&method, path, query)
    }

    #[test]
    fn requests_are_named_as_kubernetes_names_them() {
        let pair = |v: &str, r: &str| (v.to_string(), r.to_string());
        use http::Method;
        assert_eq!(
            of(Method::GET, "/api/v1/namespaces/a/pods", "labelSelector=x"),
            pair("list", "pods")
        );
        assert_eq!(
            of(Method::GET, "/api/v1/pods", "watch=true&resourceVersion=1"),
            pair("watch", "pods")
        );
        assert_eq!(
            of(Method::GET, "/apis/apps/v1/namespaces/a/statefulsets/s", ""),
            pair("get", "statefulsets")
        );
        assert_eq!(
            of(
                Method::PATCH,
                "/apis/stateward.io/v1alpha1/namespaces/a/cassandraclusters/c/status",
                "fieldManager=x"
            ),
            pair("patch", "cassandraclusters/status")
        );
        assert_eq!(
            of(Method::DELETE, "/api/v1/namespaces/a/secrets/s", ""),
            pair("delete", "secrets")
        );
        assert_eq!(
            of(Method::GET, "/api/v1/namespaces/a", ""),
            pair("get", "namespaces")
        );
        assert_eq!(of(Method::GET, "/version", ""), pair("get", "other"));
    }
}
