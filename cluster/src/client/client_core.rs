//! The client: metadata, cached connections per broker, admin operations and list offsets.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    BrokerId, CreateTopicsRequest, DeleteTopicsRequest, DescribeConfigsRequest,
    IncrementalAlterConfigsRequest, InitProducerIdRequest, ListOffsetsRequest, MetadataRequest,
    MetadataResponse, ProduceRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::connection::Connection;
use super::error::ClientError;

/// Kafka's resource type code for a topic in DescribeConfigs / IncrementalAlterConfigs.
const RESOURCE_TYPE_TOPIC: i8 = 2;
/// IncrementalAlterConfigs operation codes.
const CONFIG_OP_SET: i8 = 0;
const CONFIG_OP_DELETE: i8 = 1;
/// How many times a read or admin call is tried when the error says metadata was stale.
const METADATA_ATTEMPTS_MAX: u32 = 4;
/// Pause between those attempts.
const METADATA_RETRY_BACKOFF_MS: u64 = 100;

/// Client settings.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Timeout of every request (and of connecting), in milliseconds. Fetches get their
    /// `max_wait_ms` on top.
    pub request_timeout_ms: u64,
    /// The client id sent in every request header.
    pub client_id: String,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            request_timeout_ms: 30_000,
            client_id: "strata-client".to_string(),
        }
    }
}

/// Which offset `list_offsets` looks up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    /// The log start offset.
    Earliest,
    /// The high watermark (the offset the next visible record will get).
    Latest,
    /// The first offset whose batch timestamp is >= this many ms since the epoch.
    Timestamp(i64),
}

impl OffsetSpec {
    fn wire_timestamp(self) -> i64 {
        match self {
            OffsetSpec::Earliest => -2,
            OffsetSpec::Latest => -1,
            OffsetSpec::Timestamp(ms) => ms,
        }
    }
}

/// A broker as listed in Metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerMetadata {
    /// The broker's node id.
    pub node_id: i32,
    /// Advertised host.
    pub host: String,
    /// Advertised port.
    pub port: i32,
}

impl BrokerMetadata {
    /// `host:port`, with an IPv6 host in brackets.
    pub fn addr(&self) -> String {
        if self.host.contains(':') && !self.host.starts_with('[') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// One partition as listed in Metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionMetadata {
    /// Partition index.
    pub partition: i32,
    /// Leader node id, -1 if none.
    pub leader_id: i32,
    /// Leader epoch.
    pub leader_epoch: i32,
    /// Replica node ids.
    pub replicas: Vec<i32>,
    /// In-sync replica node ids.
    pub isr: Vec<i32>,
    /// Kafka error code for this partition (0 = none).
    pub error_code: i16,
}

/// One topic as listed in Metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMetadata {
    /// Topic name.
    pub name: String,
    /// Whether the topic is internal (e.g. `__consumer_offsets`).
    pub is_internal: bool,
    /// Partitions, sorted by index.
    pub partitions: Vec<PartitionMetadata>,
}

/// One topic config as described by DescribeConfigs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicConfigEntry {
    /// Kafka config name (e.g. `retention.ms`).
    pub name: String,
    /// Value; `None` if sensitive or unset.
    pub value: Option<String>,
    /// Whether the value is the broker default rather than set on the topic.
    pub is_default: bool,
    /// Whether the config can be altered.
    pub read_only: bool,
}

/// A topic's partitions and configs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicDescription {
    /// Topic name.
    pub name: String,
    /// Partitions, sorted by index.
    pub partitions: Vec<PartitionMetadata>,
    /// Configs, sorted by name.
    pub configs: Vec<TopicConfigEntry>,
}

/// What the broker said to a produce request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProduceAck {
    /// Offset of the first record of the batch (-1 with acks=0).
    pub base_offset: i64,
}

#[derive(Default)]
struct State {
    /// node id -> `host:port`
    brokers: HashMap<i32, String>,
    controller_id: i32,
    /// `host:port` -> idle connections
    idle: HashMap<String, Vec<Connection>>,
    topics: HashMap<String, TopicMetadata>,
}

struct Inner {
    bootstrap: Vec<String>,
    config: ClientConfig,
    state: Mutex<State>,
}

/// Idle connections kept per broker at most; more are closed when returned.
const IDLE_CONNECTIONS_PER_BROKER_MAX: usize = 16;

/// A connection checked out of the client's pool; returns itself when dropped unless broken.
pub struct PooledConnection {
    conn: Option<Connection>,
    addr: String,
    pool: std::sync::Weak<Inner>,
    /// Whether the connection came from the pool (rather than being opened for this use).
    reused: bool,
}

impl std::ops::Deref for PooledConnection {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        match &self.conn {
            Some(conn) => conn,
            None => unreachable!("the connection is taken only in drop"),
        }
    }
}

impl Drop for PooledConnection {
    fn drop(&mut self) {
        let (Some(conn), Some(inner)) = (self.conn.take(), self.pool.upgrade()) else {
            return;
        };
        if conn.is_broken() {
            return;
        }
        let mut state = inner.state.lock().unwrap_or_else(|p| p.into_inner());
        let idle = state.idle.entry(self.addr.clone()).or_default();
        if idle.len() < IDLE_CONNECTIONS_PER_BROKER_MAX {
            idle.push(conn);
        }
    }
}

/// Strata's Kafka client. Cheap to clone; clones share connections and metadata.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("bootstrap", &self.inner.bootstrap)
            .finish()
    }
}

impl Client {
    /// Connects to the first reachable server of `bootstrap` (`host:port[,host:port...]`) and
    /// loads the broker list.
    pub async fn connect(bootstrap: &str, config: ClientConfig) -> Result<Client, ClientError> {
        let servers: Vec<String> = bootstrap
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        if servers.is_empty() {
            return Err(ClientError::InvalidArgument(format!(
                "empty bootstrap server list {bootstrap:?}"
            )));
        }
        if config.request_timeout_ms == 0 {
            return Err(ClientError::InvalidArgument(
                "request_timeout_ms must be positive".to_string(),
            ));
        }
        let client = Client {
            inner: Arc::new(Inner {
                bootstrap: servers,
                config,
                state: Mutex::new(State {
                    controller_id: -1,
                    ..State::default()
                }),
            }),
        };
        client.metadata(Some(&[]), false).await?;
        Ok(client)
    }

    /// The client's configuration.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the maps half-updated in a way that
        // matters (every update is a single insert/remove), so recover from poisoning.
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A connection to `addr` for one request (or a few in a row): an idle pooled one, or a new
    /// one. It goes back to the pool when dropped unless it broke (I/O error, timeout or a
    /// cancelled call). Each concurrent request thus has its own connection, so a long-polling
    /// fetch never holds up a produce.
    pub async fn connection_to(&self, addr: &str) -> Result<PooledConnection, ClientError> {
        loop {
            let idle = self.state().idle.get_mut(addr).and_then(Vec::pop);
            match idle {
                Some(conn) if conn.is_broken() => continue,
                Some(conn) => return Ok(self.pooled(addr, conn, true)),
                None => break,
            }
        }
        let conn = Connection::connect(
            addr,
            &self.inner.config.client_id,
            self.inner.config.request_timeout_ms,
        )
        .await?;
        Ok(self.pooled(addr, conn, false))
    }

    fn pooled(&self, addr: &str, conn: Connection, reused: bool) -> PooledConnection {
        PooledConnection {
            conn: Some(conn),
            addr: addr.to_string(),
            pool: Arc::downgrade(&self.inner),
            reused,
        }
    }

    /// Closes the idle connections to `addr` (after an I/O error or timeout on one of them).
    fn drop_connection(&self, addr: &str) {
        self.state().idle.remove(addr);
    }

    /// Candidate addresses for a request any broker can answer: known brokers first, then the
    /// bootstrap servers.
    fn any_addrs(&self) -> Vec<String> {
        let state = self.state();
        let mut addrs: Vec<String> = Vec::new();
        let mut known: Vec<(&i32, &String)> = state.brokers.iter().collect();
        known.sort();
        for (_, addr) in known {
            if !addrs.contains(addr) {
                addrs.push(addr.clone());
            }
        }
        for addr in &self.inner.bootstrap {
            if !addrs.contains(addr) {
                addrs.push(addr.clone());
            }
        }
        addrs
    }

    /// Runs `call` on the first broker that can be reached, moving on to the next one on
    /// connection-level errors.
    async fn on_any_broker<T, F, Fut>(&self, call: F) -> Result<T, ClientError>
    where
        F: Fn(PooledConnection) -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        let addrs = self.any_addrs();
        let mut last_error = None;
        for addr in &addrs {
            // A pooled connection may have been closed by the broker while idle: on failure
            // try once more on a fresh connection before moving on.
            for _ in 0..2 {
                let conn = match self.connection_to(addr).await {
                    Ok(conn) => conn,
                    Err(e) => {
                        last_error = Some(e);
                        break;
                    }
                };
                let reused = conn.reused;
                match call(conn).await {
                    Err(e @ (ClientError::Io { .. } | ClientError::Disconnected { .. })) => {
                        self.drop_connection(addr);
                        last_error = Some(e);
                        if !reused {
                            break;
                        }
                    }
                    other => return other,
                }
            }
        }
        Err(ClientError::NoBrokers {
            servers: addrs.join(","),
            last_error: last_error
                .map(|e| e.to_string())
                .unwrap_or_else(|| "no servers".to_string()),
        })
    }

    /// Sends Metadata for `topics` (`None` = all topics) and updates the cached brokers and
    /// topics. Returns the topics of the response (with their error codes).
    pub async fn metadata(
        &self,
        topics: Option<&[&str]>,
        allow_auto_topic_creation: bool,
    ) -> Result<(Vec<BrokerMetadata>, Vec<(TopicMetadata, i16)>), ClientError> {
        let response: MetadataResponse = self
            .on_any_broker(|conn| async move {
                let version = conn.version_for::<MetadataRequest>()?;
                let request_topics = match topics {
                    Some(names) => Some(
                        names
                            .iter()
                            .map(|n| {
                                MetadataRequestTopic::default().with_name(Some(TopicName(
                                    StrBytes::from_string(n.to_string()),
                                )))
                            })
                            .collect(),
                    ),
                    // v0 has no null array: an empty one means all topics.
                    None if version == 0 => Some(Vec::new()),
                    None => None,
                };
                let request = MetadataRequest::default()
                    .with_topics(request_topics)
                    .with_allow_auto_topic_creation(allow_auto_topic_creation || version < 4);
                conn.request_versioned(&request, version).await
            })
            .await?;
        let brokers: Vec<BrokerMetadata> = response
            .brokers
            .iter()
            .map(|b| BrokerMetadata {
                node_id: b.node_id.0,
                host: b.host.as_str().to_string(),
                port: b.port,
            })
            .collect();
        let mut topics_out = Vec::new();
        for topic in &response.topics {
            let Some(name) = &topic.name else { continue };
            let mut partitions: Vec<PartitionMetadata> = topic
                .partitions
                .iter()
                .map(|p| PartitionMetadata {
                    partition: p.partition_index,
                    leader_id: p.leader_id.0,
                    leader_epoch: p.leader_epoch,
                    replicas: p.replica_nodes.iter().map(|b| b.0).collect(),
                    isr: p.isr_nodes.iter().map(|b| b.0).collect(),
                    error_code: p.error_code,
                })
                .collect();
            partitions.sort_by_key(|p| p.partition);
            topics_out.push((
                TopicMetadata {
                    name: name.0.as_str().to_string(),
                    is_internal: topic.is_internal,
                    partitions,
                },
                topic.error_code,
            ));
        }
        let mut state = self.state();
        state.brokers = brokers.iter().map(|b| (b.node_id, b.addr())).collect();
        state.controller_id = response.controller_id.0;
        for (topic, error_code) in &topics_out {
            if *error_code == 0 && !topic.partitions.is_empty() {
                state.topics.insert(topic.name.clone(), topic.clone());
            } else {
                state.topics.remove(&topic.name);
            }
        }
        drop(state);
        Ok((brokers, topics_out))
    }

    /// Metadata of `topic`, from the cache or the broker. With `allow_auto_topic_creation` the
    /// broker may create a missing topic (as Kafka producers ask it to).
    pub async fn topic_metadata(
        &self,
        topic: &str,
        allow_auto_topic_creation: bool,
    ) -> Result<TopicMetadata, ClientError> {
        if let Some(cached) = self.state().topics.get(topic) {
            return Ok(cached.clone());
        }
        let (_, topics) = self
            .metadata(Some(&[topic]), allow_auto_topic_creation)
            .await?;
        let Some((metadata, error_code)) = topics.into_iter().find(|(t, _)| t.name == topic) else {
            return Err(ClientError::UnknownTopic {
                topic: topic.to_string(),
            });
        };
        match ResponseError::try_from_code(error_code) {
            None if !metadata.partitions.is_empty() => Ok(metadata),
            None | Some(ResponseError::UnknownTopicOrPartition) => Err(ClientError::UnknownTopic {
                topic: topic.to_string(),
            }),
            Some(_) => Err(ClientError::from_code(
                error_code,
                format!("metadata for {topic}"),
                None,
            )),
        }
    }

    /// Forgets cached metadata of `topic` so the next call asks the broker.
    pub fn invalidate_topic(&self, topic: &str) {
        self.state().topics.remove(topic);
    }

    /// The number of partitions of `topic`.
    pub async fn partition_count(
        &self,
        topic: &str,
        allow_auto_topic_creation: bool,
    ) -> Result<i32, ClientError> {
        let mut attempt = 1;
        let metadata = loop {
            match self.topic_metadata(topic, allow_auto_topic_creation).await {
                // A topic just auto-created may briefly report LEADER_NOT_AVAILABLE.
                Err(e) if e.is_retriable() && attempt < METADATA_ATTEMPTS_MAX => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(METADATA_RETRY_BACKOFF_MS)).await;
                }
                other => break other?,
            }
        };
        i32::try_from(metadata.partitions.len())
            .map_err(|_| ClientError::InvalidArgument(format!("{topic} has too many partitions")))
    }

    /// A connection to the leader of `topic`-`partition`.
    pub async fn leader_connection(
        &self,
        topic: &str,
        partition: i32,
        allow_auto_topic_creation: bool,
    ) -> Result<PooledConnection, ClientError> {
        let addr = self
            .leader_addr(topic, partition, allow_auto_topic_creation)
            .await?;
        self.connection_to(&addr).await
    }

    /// The `host:port` of the leader of `topic`-`partition` (from cached metadata when known).
    pub async fn leader_addr(
        &self,
        topic: &str,
        partition: i32,
        allow_auto_topic_creation: bool,
    ) -> Result<String, ClientError> {
        let metadata = self
            .topic_metadata(topic, allow_auto_topic_creation)
            .await?;
        let Some(p) = metadata
            .partitions
            .iter()
            .find(|p| p.partition == partition)
        else {
            return Err(ClientError::UnknownPartition {
                topic: topic.to_string(),
                partition,
            });
        };
        let leader_not_available = || ClientError::LeaderNotAvailable {
            topic: topic.to_string(),
            partition,
        };
        if p.leader_id < 0 {
            return Err(leader_not_available());
        }
        let addr = self.state().brokers.get(&p.leader_id).cloned();
        addr.ok_or_else(leader_not_available)
    }

    /// Runs `call` against the leader of `topic`-`partition`, refreshing metadata and trying
    /// again (a few times) when the error says the metadata was stale. Only for requests that
    /// are safe to repeat.
    async fn on_leader<T, F, Fut>(
        &self,
        topic: &str,
        partition: i32,
        allow_auto_topic_creation: bool,
        call: F,
    ) -> Result<T, ClientError>
    where
        F: Fn(PooledConnection) -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        let mut attempt = 1;
        loop {
            let result = match self
                .leader_connection(topic, partition, allow_auto_topic_creation)
                .await
            {
                Ok(conn) => {
                    let addr = conn.addr().to_string();
                    let result = call(conn).await;
                    if matches!(
                        result,
                        Err(ClientError::Io { .. }
                            | ClientError::Disconnected { .. }
                            | ClientError::Timeout { .. })
                    ) {
                        self.drop_connection(&addr);
                    }
                    result
                }
                Err(e) => Err(e),
            };
            match result {
                Err(e) if e.invalidates_metadata() && attempt < METADATA_ATTEMPTS_MAX => {
                    tracing::debug!(topic, partition, attempt, error = %e, "retrying after stale metadata");
                    self.invalidate_topic(topic);
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(METADATA_RETRY_BACKOFF_MS)).await;
                }
                other => return other,
            }
        }
    }

    /// A connection for admin requests: the controller if known, else any broker.
    async fn on_admin_broker<T, F, Fut>(&self, call: F) -> Result<T, ClientError>
    where
        F: Fn(PooledConnection) -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        let controller_addr = {
            let state = self.state();
            state.brokers.get(&state.controller_id).cloned()
        };
        if let Some(addr) = controller_addr {
            if let Ok(conn) = self.connection_to(&addr).await {
                match call(conn).await {
                    Err(ClientError::Io { .. } | ClientError::Disconnected { .. }) => {
                        self.drop_connection(&addr);
                    }
                    other => return other,
                }
            }
        }
        self.on_any_broker(call).await
    }

    /// Creates topic `name` with `partitions` partitions (-1 = broker default),
    /// `replication_factor` (-1 = broker default) and topic `configs` (Kafka names).
    pub async fn create_topics(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        configs: &[(String, String)],
    ) -> Result<(), ClientError> {
        let timeout_ms = self.timeout_ms_i32();
        let topic = CreatableTopic::default()
            .with_name(TopicName(StrBytes::from_string(name.to_string())))
            .with_num_partitions(partitions)
            .with_replication_factor(replication_factor)
            .with_configs(
                configs
                    .iter()
                    .map(|(k, v)| {
                        CreatableTopicConfig::default()
                            .with_name(StrBytes::from_string(k.clone()))
                            .with_value(Some(StrBytes::from_string(v.clone())))
                    })
                    .collect(),
            );
        let request = CreateTopicsRequest::default()
            .with_topics(vec![topic])
            .with_timeout_ms(timeout_ms);
        let response = self
            .on_admin_broker(|conn| {
                let request = &request;
                async move { conn.request(request).await }
            })
            .await?;
        self.invalidate_topic(name);
        resource_result(
            &response.topics,
            |t| (t.name.0.as_str(), t.error_code, t.error_message.as_ref()),
            name,
            "create topic",
        )?;
        Ok(())
    }

    /// Deletes topics `names`. Fails with the first topic's error, if any.
    pub async fn delete_topics(&self, names: &[&str]) -> Result<(), ClientError> {
        let timeout_ms = self.timeout_ms_i32();
        let response = self
            .on_admin_broker(|conn| async move {
                let version = conn.version_for::<DeleteTopicsRequest>()?;
                let mut request = DeleteTopicsRequest::default().with_timeout_ms(timeout_ms);
                if version >= 6 {
                    request.topics = names
                        .iter()
                        .map(|n| {
                            DeleteTopicState::default()
                                .with_name(Some(TopicName(StrBytes::from_string(n.to_string()))))
                        })
                        .collect();
                } else {
                    request.topic_names = names
                        .iter()
                        .map(|n| TopicName(StrBytes::from_string(n.to_string())))
                        .collect();
                }
                conn.request_versioned(&request, version).await
            })
            .await?;
        for name in names {
            self.invalidate_topic(name);
        }
        for name in names {
            resource_result(
                &response.responses,
                |r| {
                    let topic = r.name.as_ref().map_or("", |n| n.0.as_str());
                    (topic, r.error_code, r.error_message.as_ref())
                },
                name,
                "delete topic",
            )?;
        }
        Ok(())
    }

    /// Names of all topics, sorted.
    pub async fn list_topics(&self) -> Result<Vec<String>, ClientError> {
        let (_, topics) = self.metadata(None, false).await?;
        let mut names: Vec<String> = topics
            .into_iter()
            .filter(|(_, code)| *code == 0)
            .map(|(t, _)| t.name)
            .collect();
        names.sort();
        Ok(names)
    }

    /// Partitions (fresh from the broker) and configs of `name`.
    pub async fn describe_topic(&self, name: &str) -> Result<TopicDescription, ClientError> {
        self.invalidate_topic(name);
        let metadata = self.topic_metadata(name, false).await?;
        let request = DescribeConfigsRequest::default().with_resources(vec![
            DescribeConfigsResource::default()
                .with_resource_type(RESOURCE_TYPE_TOPIC)
                .with_resource_name(StrBytes::from_string(name.to_string()))
                .with_configuration_keys(None),
        ]);
        let response = self
            .on_any_broker(|conn| {
                let request = &request;
                async move { conn.request(request).await }
            })
            .await?;
        let result = resource_result(
            &response.results,
            |r| {
                (
                    r.resource_name.as_str(),
                    r.error_code,
                    r.error_message.as_ref(),
                )
            },
            name,
            "describe configs",
        )?;
        // Config sources: 1 = DYNAMIC_TOPIC_CONFIG (set on the topic); others are defaults.
        let mut configs: Vec<TopicConfigEntry> = result
            .configs
            .iter()
            .map(|c| TopicConfigEntry {
                name: c.name.as_str().to_string(),
                value: c.value.as_ref().map(|v| v.as_str().to_string()),
                is_default: c.config_source != 1,
                read_only: c.read_only,
            })
            .collect();
        configs.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(TopicDescription {
            name: name.to_string(),
            partitions: metadata.partitions,
            configs,
        })
    }

    /// Changes topic configs incrementally: `Some(value)` sets, `None` deletes (reverts to the
    /// default).
    pub async fn alter_topic_configs(
        &self,
        name: &str,
        changes: &[(String, Option<String>)],
    ) -> Result<(), ClientError> {
        let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
            AlterConfigsResource::default()
                .with_resource_type(RESOURCE_TYPE_TOPIC)
                .with_resource_name(StrBytes::from_string(name.to_string()))
                .with_configs(
                    changes
                        .iter()
                        .map(|(k, v)| {
                            AlterableConfig::default()
                                .with_name(StrBytes::from_string(k.clone()))
                                .with_config_operation(if v.is_some() {
                                    CONFIG_OP_SET
                                } else {
                                    CONFIG_OP_DELETE
                                })
                                .with_value(v.clone().map(StrBytes::from_string))
                        })
                        .collect(),
                ),
        ]);
        let response = self
            .on_admin_broker(|conn| {
                let request = &request;
                async move { conn.request(request).await }
            })
            .await?;
        resource_result(
            &response.responses,
            |r| {
                (
                    r.resource_name.as_str(),
                    r.error_code,
                    r.error_message.as_ref(),
                )
            },
            name,
            "alter configs",
        )?;
        Ok(())
    }

    /// The offset `spec` names in `topic`-`partition`; -1 when a timestamp is past every
    /// record (Kafka's answer).
    pub async fn list_offsets(
        &self,
        topic: &str,
        partition: i32,
        spec: OffsetSpec,
    ) -> Result<i64, ClientError> {
        let timeout_ms = self.timeout_ms_i32();
        self.on_leader(topic, partition, false, |conn| async move {
            let version = conn.version_for::<ListOffsetsRequest>()?;
            let mut request = ListOffsetsRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_topics(vec![ListOffsetsTopic::default()
                    .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                    .with_partitions(vec![ListOffsetsPartition::default()
                        .with_partition_index(partition)
                        .with_timestamp(spec.wire_timestamp())])]);
            if version >= 10 {
                request.timeout_ms = timeout_ms;
            }
            let response = conn.request_versioned(&request, version).await?;
            let p = response
                .topics
                .iter()
                .filter(|t| t.name.0.as_str() == topic)
                .flat_map(|t| t.partitions.iter())
                .find(|p| p.partition_index == partition)
                .ok_or_else(|| ClientError::Protocol {
                    addr: conn.addr().to_string(),
                    reason: format!("ListOffsets response does not mention {topic}-{partition}"),
                })?;
            if p.error_code != 0 {
                return Err(ClientError::from_code(
                    p.error_code,
                    format!("list offsets of {topic}-{partition}"),
                    None,
                ));
            }
            Ok(p.offset)
        })
        .await
    }

    /// Asks any broker for a new idempotent producer id and epoch.
    pub async fn init_producer_id(&self) -> Result<(i64, i16), ClientError> {
        let mut attempt = 1;
        loop {
            let response = self
                .on_any_broker(|conn| async move {
                    let request = InitProducerIdRequest::default()
                        .with_transactional_id(None)
                        .with_transaction_timeout_ms(60_000)
                        .with_producer_id((-1).into())
                        .with_producer_epoch(-1);
                    conn.request(&request).await
                })
                .await?;
            if response.error_code == 0 {
                return Ok((response.producer_id.0, response.producer_epoch));
            }
            let error = ClientError::from_code(response.error_code, "init producer id", None);
            if !error.is_retriable() || attempt >= METADATA_ATTEMPTS_MAX {
                return Err(error);
            }
            attempt += 1;
            tokio::time::sleep(Duration::from_millis(METADATA_RETRY_BACKOFF_MS)).await;
        }
    }

    /// Sends one Produce request with `records` (one or more encoded v2 batches) to the leader
    /// of `topic`-`partition`. No retries: the caller decides (it knows whether resending is
    /// safe). With `acks == 0` nothing is awaited and the base offset is -1.
    pub(crate) async fn produce_once(
        &self,
        topic: &str,
        partition: i32,
        acks: i16,
        timeout_ms: u64,
        records: Bytes,
    ) -> Result<ProduceAck, ClientError> {
        let conn = self.leader_connection(topic, partition, true).await?;
        let addr = conn.addr().to_string();
        let result = self
            .produce_on(&conn, topic, partition, acks, timeout_ms, records)
            .await;
        if let Err(e) = &result {
            if matches!(
                e,
                ClientError::Io { .. }
                    | ClientError::Disconnected { .. }
                    | ClientError::Timeout { .. }
            ) {
                self.drop_connection(&addr);
            }
            if e.invalidates_metadata() {
                self.invalidate_topic(topic);
            }
        }
        result
    }

    async fn produce_on(
        &self,
        conn: &Connection,
        topic: &str,
        partition: i32,
        acks: i16,
        timeout_ms: u64,
        records: Bytes,
    ) -> Result<ProduceAck, ClientError> {
        let version = conn.version_for::<ProduceRequest>()?;
        let request = ProduceRequest::default()
            .with_acks(acks)
            .with_timeout_ms(i32::try_from(timeout_ms).unwrap_or(i32::MAX))
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(partition)
                    .with_records(Some(records))])]);
        if acks == 0 {
            conn.send_without_response(&request, version).await?;
            return Ok(ProduceAck { base_offset: -1 });
        }
        // The broker may hold the request up to `timeout_ms` waiting for the fsync; give the
        // network the client's own request timeout on top.
        let wait_ms = timeout_ms.saturating_add(self.inner.config.request_timeout_ms);
        let response = conn
            .request_with_timeout(&request, version, wait_ms)
            .await?;
        let p = response
            .responses
            .iter()
            .filter(|t| t.name.0.as_str() == topic)
            .flat_map(|t| t.partition_responses.iter())
            .find(|p| p.index == partition)
            .ok_or_else(|| ClientError::Protocol {
                addr: conn.addr().to_string(),
                reason: format!("Produce response does not mention {topic}-{partition}"),
            })?;
        if p.error_code != 0 {
            let mut message = p.error_message.as_ref().map(|m| m.as_str().to_string());
            let record_errors: Vec<String> = p
                .record_errors
                .iter()
                .map(|r| {
                    format!(
                        "record {}: {}",
                        r.batch_index,
                        r.batch_index_error_message
                            .as_ref()
                            .map(|m| m.as_str())
                            .unwrap_or("invalid")
                    )
                })
                .collect();
            if !record_errors.is_empty() {
                let joined = record_errors.join("; ");
                message = Some(match message {
                    Some(m) => format!("{m} ({joined})"),
                    None => joined,
                });
            }
            return Err(ClientError::from_code(
                p.error_code,
                format!("produce to {topic}-{partition}"),
                message,
            ));
        }
        Ok(ProduceAck {
            base_offset: p.base_offset,
        })
    }

    pub(crate) fn timeout_ms_i32(&self) -> i32 {
        i32::try_from(self.inner.config.request_timeout_ms).unwrap_or(i32::MAX)
    }

    /// Runs a fetch-like read against the leader, with the metadata-refresh retries.
    pub(crate) async fn on_partition_leader<T, F, Fut>(
        &self,
        topic: &str,
        partition: i32,
        call: F,
    ) -> Result<T, ClientError>
    where
        F: Fn(PooledConnection) -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        self.on_leader(topic, partition, false, call).await
    }
}

/// The entry for `name` in a response's per-topic or per-resource results (`fields` gives an
/// entry's resource name, error code and error message): an error if it is missing or failed.
fn resource_result<'a, T>(
    results: &'a [T],
    fields: impl Fn(&T) -> (&str, i16, Option<&StrBytes>),
    name: &str,
    action: &str,
) -> Result<&'a T, ClientError> {
    let Some(result) = results.iter().find(|r| fields(r).0 == name) else {
        return Err(ClientError::Protocol {
            addr: String::new(),
            reason: format!("the {action} response does not mention {name}"),
        });
    };
    let (_, error_code, error_message) = fields(result);
    if error_code != 0 {
        return Err(ClientError::from_code(
            error_code,
            format!("{action} of {name}"),
            error_message.map(|m| m.as_str().to_string()),
        ));
    }
    Ok(result)
}
