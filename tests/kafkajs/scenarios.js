#!/usr/bin/env node
// kafkajs scenarios against a Kafka-compatible broker, run by tests/test_kafkajs.py.
//
// Usage: node scenarios.js SCENARIO BOOTSTRAP [JSON_ARGS | -]   (-: the JSON arguments on stdin)
//
// Each scenario talks to the broker with kafkajs only and prints ONE line of JSON on stdout: what
// it observed (bytes as hex, offsets as strings like kafkajs gives them). The Python side asserts on
// it. Diagnostics go to stderr. Exit code 0 = the scenario ran to the end (its observations may
// still be wrong: Python decides), 1 = kafkajs threw, 2 = bad usage, 3 = the scenario's own
// deadline passed. KAFKAJS_LOG_LEVEL=DEBUG shows every request kafkajs sends.
'use strict'

const { Kafka, logLevel, CompressionTypes, ConfigResourceTypes } = require('kafkajs')

const SESSION_TIMEOUT_MS = 6000 // the broker's minimum group.min.session.timeout.ms
const HEARTBEAT_INTERVAL_MS = 500
const SCENARIO_DEADLINE_MS = Number(process.env.KAFKAJS_SCENARIO_DEADLINE_MS || 45000)

function kafkaFor(bootstrap, clientId) {
  const level = (process.env.KAFKAJS_LOG_LEVEL || 'ERROR').toUpperCase()
  return new Kafka({
    clientId,
    brokers: [bootstrap],
    logLevel: logLevel[level] === undefined ? logLevel.ERROR : logLevel[level],
    connectionTimeout: 3000,
    requestTimeout: 10000,
    retry: { retries: 5, initialRetryTime: 100, maxRetryTime: 1000 },
    logCreator: lvl => ({ namespace, log }) => {
      const { message, ...extra } = log
      process.stderr.write(
        `[kafkajs ${logLevel[lvl] || lvl} ${namespace}] ${message} ${JSON.stringify(extra)}\n`
      )
    },
  })
}

const hex = b => (b === null || b === undefined ? null : Buffer.from(b).toString('hex'))
const sleep = ms => new Promise(resolve => setTimeout(resolve, ms))

function headersHex(headers) {
  const out = {}
  for (const [k, v] of Object.entries(headers || {})) {
    out[k] = Array.isArray(v) ? v.map(hex) : hex(v)
  }
  return out
}

function messageView(topic, partition, message) {
  return {
    topic,
    partition,
    offset: message.offset,
    key: hex(message.key),
    value: hex(message.value),
    headers: headersHex(message.headers),
    timestamp: message.timestamp,
  }
}

/** Resolves once `predicate()` holds (checked every 50 ms); throws after `timeoutMs`. */
async function waitFor(what, predicate, timeoutMs) {
  const deadline = Date.now() + timeoutMs
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await sleep(50)
  }
}

function groupConsumer(kafka, groupId, extra = {}) {
  return kafka.consumer({
    groupId,
    sessionTimeout: SESSION_TIMEOUT_MS,
    rebalanceTimeout: 10000,
    heartbeatInterval: HEARTBEAT_INTERVAL_MS,
    maxWaitTimeInMs: 100,
    retry: { retries: 5, initialRetryTime: 100, maxRetryTime: 1000 },
    ...extra,
  })
}

/** Latest assignment of a consumer, from its GROUP_JOIN events: {topic: [partitions]}. */
function trackAssignment(consumer, sink) {
  consumer.on(consumer.events.GROUP_JOIN, e => {
    sink.joins += 1
    sink.assignment = e.payload.memberAssignment
  })
}

// ------------------------------------------------------------------------------------------------
// Scenarios

/** createTopics (with configs), listTopics, fetchTopicMetadata, describeConfigs, deleteTopics. */
async function admin(bootstrap, { topic }) {
  const adm = kafkaFor(bootstrap, 'it-admin').admin()
  await adm.connect()
  try {
    const created = await adm.createTopics({
      waitForLeaders: true,
      timeout: 10000,
      topics: [
        {
          topic,
          numPartitions: 3,
          replicationFactor: 1,
          configEntries: [
            { name: 'retention.ms', value: '3600000' },
            { name: 'max.message.bytes', value: '2000000' },
          ],
        },
      ],
    })
    const createdAgain = await adm.createTopics({ topics: [{ topic, numPartitions: 3 }] })
    const listed = await adm.listTopics()
    const metadata = await adm.fetchTopicMetadata({ topics: [topic] })
    const configs = await adm.describeConfigs({
      includeSynonyms: false,
      resources: [
        { type: ConfigResourceTypes.TOPIC, name: topic, configNames: ['retention.ms', 'max.message.bytes'] },
      ],
    })
    await adm.deleteTopics({ topics: [topic], timeout: 10000 })
    let listedAfterDelete = await adm.listTopics()
    // A deletion may take a moment to show in metadata; give it up to 5 s like a user would.
    const deadline = Date.now() + 5000
    while (listedAfterDelete.includes(topic) && Date.now() < deadline) {
      await sleep(200)
      listedAfterDelete = await adm.listTopics()
    }
    return {
      created,
      createdAgain,
      listed: listed.includes(topic),
      listedAfterDelete: listedAfterDelete.includes(topic),
      metadata: metadata.topics.map(t => ({
        name: t.name,
        partitions: t.partitions
          .map(p => ({ partition: p.partitionId, leader: p.leader, replicas: p.replicas, error: p.partitionErrorCode }))
          .sort((a, b) => a.partition - b.partition),
      })),
      configs: configs.resources.map(r => ({
        errorCode: r.errorCode,
        name: r.resourceName,
        entries: Object.fromEntries(r.configEntries.map(e => [e.configName, e.configValue])),
      })),
    }
  } finally {
    await adm.disconnect()
  }
}

/** Creates `topic` with `partitions` partitions (kafkajs admin). */
async function createTopic(bootstrap, topic, partitions, configEntries = []) {
  const adm = kafkaFor(bootstrap, 'it-create').admin()
  await adm.connect()
  try {
    await adm.createTopics({
      waitForLeaders: true,
      timeout: 10000,
      topics: [{ topic, numPartitions: partitions, replicationFactor: 1, configEntries }],
    })
  } finally {
    await adm.disconnect()
  }
}

/** Turns a JSON record description into a kafkajs message: hex fields -> Buffers. */
function toMessage(r) {
  const m = {}
  if ('key_hex' in r) m.key = r.key_hex === null ? null : Buffer.from(r.key_hex, 'hex')
  if ('key' in r) m.key = r.key
  m.value = r.value_hex === null || r.value_hex === undefined ? (r.value ?? null) : Buffer.from(r.value_hex, 'hex')
  if (r.headers_hex) {
    m.headers = Object.fromEntries(Object.entries(r.headers_hex).map(([k, v]) => [k, Buffer.from(v, 'hex')]))
  }
  if (r.headers) m.headers = r.headers
  if (r.partition !== undefined) m.partition = r.partition
  if (r.timestamp !== undefined) m.timestamp = String(r.timestamp)
  return m
}

const metaView = meta =>
  meta.map(m => ({
    topic: m.topicName,
    partition: m.partition,
    errorCode: m.errorCode,
    baseOffset: m.baseOffset,
  }))

/**
 * One producer send per entry of `sends`: {records, acks, compression: "none"|"gzip"}; then an
 * idempotent producer's sends, then one sendBatch over several partitions. Returns the
 * RecordMetadata of every send.
 */
async function produce(bootstrap, { topic, partitions, sends, idempotentSends, batch }) {
  await createTopic(bootstrap, topic, partitions)
  const kafka = kafkaFor(bootstrap, 'it-producer')
  const results = { sends: [], idempotentSends: [], batch: null }

  const producer = kafka.producer({ allowAutoTopicCreation: false })
  await producer.connect()
  try {
    for (const s of sends || []) {
      const meta = await producer.send({
        topic,
        acks: s.acks,
        compression: s.compression === 'gzip' ? CompressionTypes.GZIP : CompressionTypes.None,
        messages: s.records.map(toMessage),
      })
      results.sends.push(metaView(meta))
    }
    if (batch) {
      const meta = await producer.sendBatch({
        acks: -1,
        compression: batch.compression === 'gzip' ? CompressionTypes.GZIP : CompressionTypes.None,
        topicMessages: [{ topic, messages: batch.records.map(toMessage) }],
      })
      results.batch = metaView(meta)
    }
  } finally {
    await producer.disconnect()
  }

  if (idempotentSends && idempotentSends.length) {
    const idem = kafka.producer({ idempotent: true, maxInFlightRequests: 1, allowAutoTopicCreation: false })
    await idem.connect()
    try {
      for (const s of idempotentSends) {
        const meta = await idem.send({
          topic,
          acks: -1, // kafkajs requires acks=all for an idempotent producer
          compression: s.compression === 'gzip' ? CompressionTypes.GZIP : CompressionTypes.None,
          messages: s.records.map(toMessage),
        })
        results.idempotentSends.push(metaView(meta))
      }
    } finally {
      await idem.disconnect()
    }
  }
  return results
}

/** One consumer in a fresh group: subscribe fromBeginning + run/eachMessage until `count` records. */
async function consumeAll(bootstrap, { topic, groupId, count, settleMs = 1000 }) {
  const consumer = groupConsumer(kafkaFor(bootstrap, 'it-consumer'), groupId)
  const seen = []
  const state = { joins: 0, assignment: null }
  trackAssignment(consumer, state)
  await consumer.connect()
  try {
    await consumer.subscribe({ topics: [topic], fromBeginning: true })
    await consumer.run({
      eachMessage: async ({ topic: t, partition, message }) => {
        seen.push(messageView(t, partition, message))
      },
    })
    await waitFor(`${count} records`, () => seen.length >= count, 30000)
    await sleep(settleMs) // anything delivered twice or beyond the end shows up here
  } finally {
    await consumer.disconnect()
  }
  return { records: seen, assignment: state.assignment, joins: state.joins }
}

/**
 * Two consumers of one group on `topic`: waits until their assignments are disjoint and cover every
 * partition, then produces `perPartition` records to each partition and reads until all arrived.
 * Then member a disconnects (LeaveGroup); once b owns every partition, `perPartition` more records
 * go to each partition and b reads them (b's records are split into before/after the handover).
 */
async function twoConsumers(bootstrap, { topic, groupId, partitions, perPartition, settleMs = 1500 }) {
  await createTopic(bootstrap, topic, partitions)
  const kafka = kafkaFor(bootstrap, 'it-pair')
  const members = ['a', 'b'].map(name => ({
    name,
    consumer: groupConsumer(kafka, groupId),
    state: { joins: 0, assignment: null },
    records: [],
  }))
  const all = () => members.flatMap(m => m.records)
  const owned = m => (m.state.assignment && m.state.assignment[topic]) || []
  const produceRound = async round => {
    const producer = kafka.producer({ allowAutoTopicCreation: false })
    await producer.connect()
    try {
      const messages = []
      for (let p = 0; p < partitions; p++) {
        for (let i = 0; i < perPartition; i++) {
          messages.push({ partition: p, key: `k${round}-${p}-${i}`, value: `v${round}-${p}-${i}` })
        }
      }
      return metaView(await producer.send({ topic, acks: -1, messages }))
    } finally {
      await producer.disconnect()
    }
  }
  try {
    for (const m of members) {
      trackAssignment(m.consumer, m.state)
      await m.consumer.connect()
      await m.consumer.subscribe({ topics: [topic], fromBeginning: true })
      await m.consumer.run({
        eachMessage: async ({ topic: t, partition, message }) => {
          m.records.push(messageView(t, partition, message))
        },
      })
    }
    await waitFor(
      'a stable split of the partitions between the two members',
      () => {
        const [a, b] = members.map(owned)
        const union = new Set([...a, ...b])
        return a.length > 0 && b.length > 0 && a.length + b.length === partitions && union.size === partitions
      },
      30000
    )
    const assignments = Object.fromEntries(members.map(m => [m.name, [...owned(m)].sort((x, y) => x - y)]))

    const produced = await produceRound(0)
    const total = partitions * perPartition
    await waitFor(`${total} records across both members`, () => all().length >= total, 30000)
    await sleep(settleMs)
    const finalAssignments = Object.fromEntries(members.map(m => [m.name, [...owned(m)].sort((x, y) => x - y)]))
    const records = Object.fromEntries(members.map(m => [m.name, m.records.splice(0)]))

    // Handover: a leaves, b must take every partition and continue after a's commits.
    const [a, b] = members
    const leftAt = Date.now()
    await a.consumer.disconnect()
    await waitFor('b owning every partition after a left', () => owned(b).length === partitions, 30000)
    const handoverMs = Date.now() - leftAt
    const producedAfter = await produceRound(1)
    await waitFor(`${total} records at b after the handover`, () => b.records.length >= total, 30000)
    await sleep(settleMs)
    return {
      assignments,
      finalAssignments,
      produced,
      records,
      handoverMs,
      afterHandover: { assignment: [...owned(b)].sort((x, y) => x - y), produced: producedAfter, records: b.records, aRecords: a.records },
    }
  } finally {
    for (const m of members) await m.consumer.disconnect()
  }
}

/**
 * Phase 1: a consumer of `groupId` processes the first `stopAfter` records it gets, committing each
 * one's offset (autoCommit off: commitOffsets), then disconnects. Phase 2: a new consumer of the
 * same group reads everything that remains (`total - stopAfter` records). Also returns what
 * admin.fetchOffsets reports between and after the phases, and the group as admin.listGroups and
 * admin.describeGroups show it once both members left.
 */
async function commitResume(bootstrap, { topic, groupId, stopAfter, total, settleMs = 1500 }) {
  const kafka = kafkaFor(bootstrap, 'it-resume')
  const adm = kafka.admin()
  await adm.connect()
  const result = { phase1: [], phase2: [] }
  try {
    const first = groupConsumer(kafka, groupId)
    await first.connect()
    try {
      await first.subscribe({ topics: [topic], fromBeginning: true })
      await first.run({
        autoCommit: false,
        eachMessage: async ({ topic: t, partition, message }) => {
          if (result.phase1.length >= stopAfter) return // fetched but not processed: not committed
          result.phase1.push(messageView(t, partition, message))
          await first.commitOffsets([{ topic: t, partition, offset: (BigInt(message.offset) + 1n).toString() }])
        },
      })
      await waitFor(`${stopAfter} processed records`, () => result.phase1.length >= stopAfter, 30000)
    } finally {
      await first.disconnect()
    }
    result.committedBetween = await adm.fetchOffsets({ groupId, topics: [topic] })

    const second = groupConsumer(kafka, groupId)
    await second.connect()
    try {
      await second.subscribe({ topics: [topic], fromBeginning: true })
      await second.run({
        eachMessage: async ({ topic: t, partition, message }) => {
          result.phase2.push(messageView(t, partition, message))
        },
      })
      await waitFor(`${total - stopAfter} remaining records`, () => result.phase2.length >= total - stopAfter, 30000)
      await sleep(settleMs)
    } finally {
      await second.disconnect() // autoCommit (the default) commits what was processed
    }
    result.committedAfter = await adm.fetchOffsets({ groupId, topics: [topic] })
    result.listedGroups = (await adm.listGroups()).groups.filter(g => g.groupId === groupId)
    result.describedGroups = (await adm.describeGroups([groupId])).groups.map(g => ({
      groupId: g.groupId,
      errorCode: g.errorCode,
      state: g.state,
      protocolType: g.protocolType,
      members: g.members.length,
    }))
    return result
  } finally {
    await adm.disconnect()
  }
}

/**
 * Produces the given records (with explicit timestamps), then asks admin.fetchTopicOffsets and
 * admin.fetchTopicOffsetsByTimestamp for each of `timestamps`, and admin.fetchOffsets of `groupId`
 * before and after a member of it commits the `commit` offsets (consumer.commitOffsets).
 */
async function offsets(bootstrap, { topic, partitions, records, timestamps, groupId, commit }) {
  await createTopic(bootstrap, topic, partitions)
  const kafka = kafkaFor(bootstrap, 'it-offsets')
  const adm = kafka.admin()
  await adm.connect()
  try {
    const beforeProduce = await adm.fetchTopicOffsets(topic)
    const producer = kafka.producer({ allowAutoTopicCreation: false })
    await producer.connect()
    try {
      // One send per record so each one's timestamp is its own batch's too.
      for (const r of records) await producer.send({ topic, acks: -1, messages: [toMessage(r)] })
    } finally {
      await producer.disconnect()
    }
    const topicOffsets = await adm.fetchTopicOffsets(topic)
    const byTimestamp = {}
    for (const ts of timestamps) byTimestamp[ts] = await adm.fetchTopicOffsetsByTimestamp(topic, ts)

    const committedBefore = await adm.fetchOffsets({ groupId, topics: [topic] })
    // Commit through a group member, the way an application does.
    const consumer = groupConsumer(kafka, groupId)
    await consumer.connect()
    const state = { joins: 0, assignment: null }
    trackAssignment(consumer, state)
    try {
      await consumer.subscribe({ topics: [topic], fromBeginning: true })
      await consumer.run({ autoCommit: false, eachMessage: async () => {} })
      await waitFor('the group join', () => state.joins > 0, 30000)
      await consumer.commitOffsets(commit.map(c => ({ topic, partition: c.partition, offset: String(c.offset) })))
    } finally {
      await consumer.disconnect()
    }
    const committedAfter = await adm.fetchOffsets({ groupId, topics: [topic] })
    return { beforeProduce, topicOffsets, byTimestamp, committedBefore, committedAfter }
  } finally {
    await adm.disconnect()
  }
}

const SCENARIOS = { admin, produce, consumeAll, twoConsumers, commitResume, offsets }

async function main() {
  const [name, bootstrap, argsJson] = process.argv.slice(2)
  const scenario = SCENARIOS[name]
  if (!scenario || !bootstrap) {
    process.stderr.write(`usage: node scenarios.js {${Object.keys(SCENARIOS).join('|')}} HOST:PORT [JSON|-]\n`)
    process.exit(2)
  }
  const timer = setTimeout(() => {
    process.stderr.write(`scenario ${name} did not finish within ${SCENARIO_DEADLINE_MS} ms\n`)
    process.exit(3)
  }, SCENARIO_DEADLINE_MS)
  try {
    const text = argsJson === '-' ? require('fs').readFileSync(0, 'utf8') : argsJson
    const result = await scenario(bootstrap, text ? JSON.parse(text) : {})
    process.stdout.write(JSON.stringify(result) + '\n')
    clearTimeout(timer)
    process.exit(0)
  } catch (e) {
    process.stderr.write(`scenario ${name} failed: ${e && e.stack ? e.stack : e}\n`)
    if (e && e.type) process.stderr.write(`kafkajs error type: ${e.type}\n`)
    process.exit(1)
  }
}

main()
