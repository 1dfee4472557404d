//! Kubernetes' CRI image service, proxied: kubelet's
//! `imageServiceEndpoint` points at strata's socket, every call goes on
//! to containerd's CRI plugin unchanged, and the credentials of a
//! PullImage (kubelet's imagePullSecrets, in `PullImageRequest.auth`)
//! are held while that pull runs, so that strata's own fetch of its
//! layers (see remote) signs in with them, as stargz's CRI keychain does.
//! They live in memory for the pull alone: never in a log, an error or a
//! file.

// The trait fixes tonic::Status, a large type, as every call's error.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};

use crate::error::{Error, Result};
use crate::registry::credentials::Credentials;
use crate::registry::reference::Reference;

#[allow(clippy::all, missing_docs)]
pub mod api {
    tonic::include_proto!("runtime.v1");
}

use api::image_service_client::ImageServiceClient;
use api::image_service_server::{ImageService, ImageServiceServer};

/// Credentials of the pulls under way, by `registry/repository`.
#[derive(Default)]
pub struct PullSecrets {
    by_repository: Mutex<HashMap<String, Vec<Credentials>>>,
}

impl PullSecrets {
    /// Those of the latest pull under way of `image_ref`'s repository.
    pub fn for_image(&self, image_ref: &str) -> Option<Credentials> {
        let key = repository_key(image_ref)?;
        let map = self.by_repository.lock().expect("no panics under the lock");
        map.get(&key).and_then(|v| v.last()).cloned()
    }

    /// Held until the returned guard drops (the pull is over).
    fn hold(self: &Arc<Self>, image_ref: &str, creds: Credentials) -> Option<HeldSecret> {
        let key = repository_key(image_ref)?;
        let mut map = self.by_repository.lock().expect("no panics under the lock");
        map.entry(key.clone()).or_default().push(creds);
        Some(HeldSecret {
            secrets: self.clone(),
            key,
        })
    }
}

/// `registry/repository` of a reference as docker normalises it.
fn repository_key(image_ref: &str) -> Option<String> {
    let r = Reference::parse(image_ref).ok()?;
    Some(format!("{}/{}", r.registry, r.repository))
}

struct HeldSecret {
    secrets: Arc<PullSecrets>,
    key: String,
}

impl Drop for HeldSecret {
    fn drop(&mut self) {
        let mut map = self
            .secrets
            .by_repository
            .lock()
            .expect("no panics under the lock");
        if let Some(v) = map.get_mut(&self.key) {
            v.pop();
            if v.is_empty() {
                map.remove(&self.key);
            }
        }
    }
}

/// kubelet's AuthConfig as credentials: a username and password, or the
/// `auth` field's base64 `user:password`. Tokens are left to containerd.
fn credentials_of(auth: &api::AuthConfig) -> Option<Credentials> {
    if !auth.username.is_empty() {
        return Some(Credentials::new(&auth.username, &auth.password));
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(auth.auth.trim())
        .ok()?;
    let (user, password) = std::str::from_utf8(&raw).ok()?.split_once(':')?;
    (!user.is_empty()).then(|| Credentials::new(user, password))
}

/// The proxy: every call forwarded to containerd's CRI image service.
pub struct CriImageProxy {
    upstream: ImageServiceClient<Channel>,
    secrets: Arc<PullSecrets>,
}

impl CriImageProxy {
    /// A proxy to containerd's CRI at `upstream`, connected on first use.
    pub fn new(upstream: &Path, secrets: Arc<PullSecrets>) -> Result<CriImageProxy> {
        let path = upstream.to_path_buf();
        let channel = Endpoint::try_from("http://[::]:50051")
            .map_err(|e| Error::Invalid(format!("containerd endpoint: {e}")))?
            .connect_with_connector_lazy(tower::service_fn(move |_| {
                tokio::net::UnixStream::connect(path.clone())
            }));
        Ok(CriImageProxy {
            upstream: ImageServiceClient::new(channel),
            secrets,
        })
    }

    pub fn server(self) -> ImageServiceServer<CriImageProxy> {
        ImageServiceServer::new(self)
    }
}

#[tonic::async_trait]
impl ImageService for CriImageProxy {
    async fn list_images(
        &self,
        req: Request<api::ListImagesRequest>,
    ) -> std::result::Result<Response<api::ListImagesResponse>, Status> {
        self.upstream.clone().list_images(req.into_inner()).await
    }

    async fn image_status(
        &self,
        req: Request<api::ImageStatusRequest>,
    ) -> std::result::Result<Response<api::ImageStatusResponse>, Status> {
        self.upstream.clone().image_status(req.into_inner()).await
    }

    async fn pull_image(
        &self,
        req: Request<api::PullImageRequest>,
    ) -> std::result::Result<Response<api::PullImageResponse>, Status> {
        let req = req.into_inner();
        let image = req
            .image
            .as_ref()
            .map(|i| i.image.clone())
            .unwrap_or_default();
        let _held = req
            .auth
            .as_ref()
            .and_then(credentials_of)
            .and_then(|c| self.secrets.hold(&image, c));
        self.upstream.clone().pull_image(req).await
    }

    async fn remove_image(
        &self,
        req: Request<api::RemoveImageRequest>,
    ) -> std::result::Result<Response<api::RemoveImageResponse>, Status> {
        self.upstream.clone().remove_image(req.into_inner()).await
    }

    async fn image_fs_info(
        &self,
        req: Request<api::ImageFsInfoRequest>,
    ) -> std::result::Result<Response<api::ImageFsInfoResponse>, Status> {
        self.upstream.clone().image_fs_info(req.into_inner()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubelet_s_auth_config_gives_credentials_by_fields_or_auth() {
        let fields = api::AuthConfig {
            username: "u".into(),
            password: "p".into(),
            ..Default::default()
        };
        assert_eq!(credentials_of(&fields), Some(Credentials::new("u", "p")));
        let encoded = api::AuthConfig {
            auth: base64::engine::general_purpose::STANDARD.encode("u:p:q"),
            ..Default::default()
        };
        assert_eq!(credentials_of(&encoded), Some(Credentials::new("u", "p:q")));
        assert_eq!(credentials_of(&api::AuthConfig::default()), None);
    }

    #[test]
    fn a_secret_is_held_for_its_pull_alone() {
        let secrets = Arc::new(PullSecrets::default());
        let held = secrets.hold("127.0.0.1:5000/app:v1", Credentials::new("u", "p"));
        let digest = format!("127.0.0.1:5000/app@sha256:{}", "0".repeat(64));
        assert!(secrets.for_image(&digest).is_some(), "by repository");
        assert!(secrets.for_image("127.0.0.1:5000/app:v2").is_some());
        assert_eq!(secrets.for_image("127.0.0.1:5000/other:v1"), None);
        drop(held);
        assert_eq!(secrets.for_image("127.0.0.1:5000/app:v1"), None);
    }
}
