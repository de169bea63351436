//! `strata serve --object-store URL`: the remote tier's object store, chosen by a URL.
//!
//! - no URL: `file://<data_dir>/remote` (tiering works with no other service);
//! - `file:///abs/path`: a local directory (created if missing);
//! - `s3://bucket[/prefix]`: S3 or an S3-compatible server, configured from the environment
//!   (`AWS_ENDPOINT_URL` or `AWS_ENDPOINT`, `AWS_REGION` (default us-east-1),
//!   `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_ALLOW_HTTP`); with an endpoint set,
//!   requests are path-style (`http://endpoint/bucket/key`), as MinIO-like servers expect;
//! - `none`: no remote tier.
//!
//! A failed S3 request is retried a few times within seconds ([`S3_RETRY_TIMEOUT`]), then its
//! error goes to the tiering layer, which tries again at its next run.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::prefix::PrefixStore;
use object_store::{BackoffConfig, ObjectStore, RetryConfig};

/// The folder under the data dir that holds the remote tier when no `--object-store` is given.
pub const DEFAULT_REMOTE_DIR: &str = "remote";

/// The accepted forms, for error messages and `--help`.
pub const ACCEPTED_FORMS: &str = "file:///ABSOLUTE/PATH, s3://BUCKET[/PREFIX] or none";

/// What an object-store URL names, before anything is opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// A local directory (absolute).
    File(PathBuf),
    /// An S3 bucket and a key prefix inside it (no leading or trailing `/`; empty for none).
    S3 { bucket: String, prefix: String },
    /// No remote tier.
    Disabled,
}

/// Parses an object-store URL (`None`: the default under `data_dir`) without opening anything.
pub fn parse_location(url: Option<&str>, data_dir: &Path) -> anyhow::Result<StoreLocation> {
    let Some(url) = url.map(str::trim) else {
        return Ok(StoreLocation::File(default_remote_dir(data_dir)?));
    };
    if url.eq_ignore_ascii_case("none") {
        return Ok(StoreLocation::Disabled);
    }
    if let Some(path) = url.strip_prefix("file://") {
        if path.is_empty() || !path.starts_with('/') {
            bail!(
                "bad object store URL {url:?}: a file URL needs an absolute path \
                 (file:///abs/path); accepted: {ACCEPTED_FORMS}"
            );
        }
        return Ok(StoreLocation::File(PathBuf::from(path)));
    }
    if let Some(rest) = url.strip_prefix("s3://") {
        let (bucket, prefix) = match rest.split_once('/') {
            Some((bucket, prefix)) => (bucket, prefix.trim_matches('/')),
            None => (rest, ""),
        };
        if bucket.is_empty() {
            bail!("bad object store URL {url:?}: no bucket (s3://BUCKET[/PREFIX])");
        }
        if prefix.split('/').any(|part| part.is_empty()) && !prefix.is_empty() {
            bail!("bad object store URL {url:?}: empty path segment in the prefix");
        }
        object_store::path::Path::parse(prefix)
            .with_context(|| format!("bad object store URL {url:?}: bad prefix {prefix:?}"))?;
        return Ok(StoreLocation::S3 {
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
        });
    }
    bail!("bad object store URL {url:?}: accepted: {ACCEPTED_FORMS}")
}

/// `<data_dir>/remote`, absolute (a relative data dir is taken from the current directory).
fn default_remote_dir(data_dir: &Path) -> anyhow::Result<PathBuf> {
    let dir = data_dir.join(DEFAULT_REMOTE_DIR);
    if dir.is_absolute() {
        return Ok(dir);
    }
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    Ok(cwd.join(dir))
}

/// Opens the remote tier's object store named by `url` (`None`: `file://<data_dir>/remote`).
/// Returns `None` for `none`, else the store and a description for the logs.
pub fn open_object_store(
    url: Option<&str>,
    data_dir: &Path,
) -> anyhow::Result<Option<(Arc<dyn ObjectStore>, String)>> {
    match parse_location(url, data_dir)? {
        StoreLocation::Disabled => Ok(None),
        StoreLocation::File(dir) => {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create the remote tier dir {}", dir.display()))?;
            // fsync of every written file and of its directory before a put returns, like the
            // durability S3 gives a successful PUT: the broker deletes local segments once the
            // manifest naming their file is written (docs/durability.md).
            let store = LocalFileSystem::new_with_prefix(&dir)
                .with_context(|| format!("cannot open the remote tier dir {}", dir.display()))?
                .with_fsync(true)
                .with_automatic_cleanup(true);
            Ok(Some((Arc::new(store), format!("file://{}", dir.display()))))
        }
        StoreLocation::S3 { bucket, prefix } => {
            let builder = s3_builder(&bucket, AmazonS3Builder::from_env());
            let endpoint = s3_endpoint(&builder).unwrap_or_else(|| "AWS".to_string());
            let s3 = builder
                .build()
                .with_context(|| format!("cannot configure S3 bucket {bucket:?}"))?;
            let description = if prefix.is_empty() {
                format!("s3://{bucket} at {endpoint}")
            } else {
                format!("s3://{bucket}/{prefix} at {endpoint}")
            };
            let store: Arc<dyn ObjectStore> = if prefix.is_empty() {
                Arc::new(s3)
            } else {
                let prefix = object_store::path::Path::parse(&prefix)
                    .with_context(|| format!("bad S3 prefix {prefix:?}"))?;
                Arc::new(PrefixStore::new(s3, prefix))
            };
            Ok(Some((store, description)))
        }
    }
}

/// Retries of one S3 request before its error reaches the tiering layer. Short: the broker tries
/// the upload again at its next tier run anyway, and `strata tier status` should show an outage
/// within seconds (object_store's default retries for up to 3 minutes).
pub const S3_RETRIES_MAX: usize = 3;
/// The time from a request's first try after which it is no longer retried.
pub const S3_RETRY_TIMEOUT: Duration = Duration::from_secs(10);

/// The S3 builder for `bucket` on top of `builder` (normally `from_env`): path-style requests
/// when an endpoint is set (S3-compatible servers), us-east-1 when no region is set, short
/// retries ([`S3_RETRIES_MAX`], [`S3_RETRY_TIMEOUT`]).
fn s3_builder(bucket: &str, builder: AmazonS3Builder) -> AmazonS3Builder {
    let retry = RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            base: 2.0,
        },
        max_retries: S3_RETRIES_MAX,
        retry_timeout: S3_RETRY_TIMEOUT,
    };
    let mut builder = builder.with_bucket_name(bucket).with_retry(retry);
    if builder
        .get_config_value(&AmazonS3ConfigKey::Region)
        .is_none()
    {
        builder = builder.with_region("us-east-1");
    }
    if s3_endpoint(&builder).is_some() {
        builder = builder.with_virtual_hosted_style_request(false);
    }
    builder
}

/// The endpoint set on `builder` (`AWS_ENDPOINT_URL_S3` first, as the builder does), if any.
fn s3_endpoint(builder: &AmazonS3Builder) -> Option<String> {
    builder
        .get_config_value(&AmazonS3ConfigKey::S3Endpoint)
        .or_else(|| builder.get_config_value(&AmazonS3ConfigKey::Endpoint))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "strata-object-store-url-{}-{name}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn default_is_a_remote_folder_in_the_data_dir() {
        let location = parse_location(None, Path::new("/var/lib/strata")).expect("parse");
        assert_eq!(
            location,
            StoreLocation::File(PathBuf::from("/var/lib/strata/remote"))
        );
        // A relative data dir becomes absolute (LocalFileSystem needs it).
        match parse_location(None, Path::new("strata-data")).expect("parse") {
            StoreLocation::File(dir) => {
                assert!(dir.is_absolute(), "{}", dir.display());
                assert!(dir.ends_with("strata-data/remote"), "{}", dir.display());
            }
            other => panic!("expected a folder, got {other:?}"),
        }
    }

    #[test]
    fn file_urls_need_an_absolute_path() {
        assert_eq!(
            parse_location(Some("file:///srv/tier"), Path::new("/d")).expect("parse"),
            StoreLocation::File(PathBuf::from("/srv/tier"))
        );
        for bad in ["file://", "file://relative/dir"] {
            let error = parse_location(Some(bad), Path::new("/d")).expect_err(bad);
            assert!(error.to_string().contains("absolute"), "{error}");
        }
    }

    #[test]
    fn s3_urls_give_bucket_and_prefix() {
        let cases = [
            ("s3://bucket", "bucket", ""),
            ("s3://bucket/", "bucket", ""),
            ("s3://bucket/archive", "bucket", "archive"),
            ("s3://bucket/a/b/", "bucket", "a/b"),
        ];
        for (url, bucket, prefix) in cases {
            assert_eq!(
                parse_location(Some(url), Path::new("/d")).expect(url),
                StoreLocation::S3 {
                    bucket: bucket.to_string(),
                    prefix: prefix.to_string()
                },
                "{url}"
            );
        }
        for bad in ["s3://", "s3:///prefix", "s3://bucket/a//b"] {
            assert!(parse_location(Some(bad), Path::new("/d")).is_err(), "{bad}");
        }
        let error = parse_location(Some("s3:///x"), Path::new("/d")).expect_err("no bucket");
        assert!(error.to_string().contains("no bucket"), "{error}");
    }

    #[test]
    fn none_disables_and_other_schemes_are_refused() {
        assert_eq!(
            parse_location(Some("none"), Path::new("/d")).expect("none"),
            StoreLocation::Disabled
        );
        assert!(open_object_store(Some("NONE"), Path::new("/d"))
            .expect("none")
            .is_none());
        for bad in ["gs://bucket", "/abs/path", "http://host/bucket", ""] {
            let error = parse_location(Some(bad), Path::new("/d")).expect_err(bad);
            assert!(error.to_string().contains(ACCEPTED_FORMS), "{error}");
        }
    }

    #[test]
    fn file_store_creates_its_folder_and_writes_there() {
        let dir = temp_dir("file");
        let url = format!("file://{}", dir.join("tier").display());
        let (store, description) = open_object_store(Some(&url), Path::new("/unused"))
            .expect("open")
            .expect("a store");
        assert!(description.contains("tier"), "{description}");
        assert!(dir.join("tier").is_dir());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            use object_store::ObjectStoreExt;
            let location = object_store::path::Path::from("t/partition=0/x.txt");
            store
                .put(&location, bytes::Bytes::from_static(b"hello").into())
                .await
                .expect("put");
        });
        let written = std::fs::read(dir.join("tier/t/partition=0/x.txt")).expect("read back");
        assert_eq!(written, b"hello");
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn default_store_is_created_under_the_data_dir() {
        let dir = temp_dir("default");
        let (_, description) = open_object_store(None, &dir)
            .expect("open")
            .expect("a store");
        assert!(dir.join(DEFAULT_REMOTE_DIR).is_dir());
        assert!(description.starts_with("file://"), "{description}");
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn s3_builder_uses_path_style_with_an_endpoint_and_a_default_region() {
        let builder = s3_builder(
            "b",
            AmazonS3Builder::new().with_endpoint("http://127.0.0.1:9010"),
        );
        assert_eq!(
            builder.get_config_value(&AmazonS3ConfigKey::VirtualHostedStyleRequest),
            Some("false".to_string())
        );
        assert_eq!(
            builder.get_config_value(&AmazonS3ConfigKey::Region),
            Some("us-east-1".to_string())
        );
        assert_eq!(
            builder.get_config_value(&AmazonS3ConfigKey::Bucket),
            Some("b".to_string())
        );
        let builder = s3_builder("b", AmazonS3Builder::new().with_region("eu-west-1"));
        assert_eq!(
            builder.get_config_value(&AmazonS3ConfigKey::Region),
            Some("eu-west-1".to_string())
        );
        // An S3 store with a prefix builds without touching the network.
        let s3 = s3_builder(
            "b",
            AmazonS3Builder::new()
                .with_endpoint("http://127.0.0.1:9")
                .with_allow_http(true)
                .with_access_key_id("k")
                .with_secret_access_key("s"),
        )
        .build()
        .expect("build");
        let prefixed = PrefixStore::new(s3, "archive");
        assert!(prefixed.to_string().contains("archive"));
    }
}
