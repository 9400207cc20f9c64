//! The client and namespace, found as kubectl finds them: `--kubeconfig`, else $KUBECONFIG
//! (a list of files, merged), else ~/.kube/config, else the in-cluster configuration; the
//! current context unless `--context`; the context's namespace unless `-n`.

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use super::{Error, Global};

/// Where a command works.
pub struct Target {
    pub client: Client,
    /// `-n`, else the kubeconfig context's namespace, else `default`.
    pub namespace: String,
}

pub async fn connect(g: &Global) -> Result<Target, Error> {
    let options = KubeConfigOptions { context: g.context.clone(), ..KubeConfigOptions::default() };
    let config = match (&g.kubeconfig, &g.context) {
        (Some(path), _) => {
            let kubeconfig =
                Kubeconfig::read_from(path).map_err(|e| Error::Config(format!("reading kubeconfig {}: {e}", path.display())))?;
            Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .map_err(|e| Error::Config(format!("kubeconfig {}: {e}", path.display())))?
        }
        (None, Some(_)) => Config::from_kubeconfig(&options).await.map_err(|e| Error::Config(format!("kubeconfig: {e}")))?,
        (None, None) => Config::infer().await.map_err(|e| Error::Config(format!("no cluster to talk to: {e}")))?,
    };
    let namespace = g.namespace.clone().unwrap_or_else(|| config.default_namespace.clone());
    let client = Client::try_from(config).map_err(|e| Error::Config(format!("creating the client: {e}")))?;
    Ok(Target { client, namespace })
}
