import { createHash } from 'node:crypto'
import { Type } from 'typebox'
import { defineJob } from '../../core/jobs.ts'
import type { ModuleContext } from '../../core/module.ts'
import { type Incident, NOTIFY_JOB, type NotifyKind, runbookOf, toIncident } from './incidents.service.ts'

/** A UUID derived from the incident and the kind: a retried job emits the same event id (delivered once). */
function eventIdOf(incidentId: string, kind: NotifyKind): string {
  const h = createHash('sha256').update(`${incidentId}:${kind}`).digest('hex')
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-${((Number.parseInt(h[16]!, 16) & 3) | 8).toString(16)}${h.slice(17, 20)}-${h.slice(20, 32)}`
}

const VERB: Record<NotifyKind, string> = {
  opened: 'opened',
  escalated: 'ESCALATED (unacknowledged)',
  resolved: 'resolved',
}

/**
 * The message of a notification, as Slack (and Mattermost, Rocket.Chat, Discord's Slack-compatible
 * endpoint) take it: `text` (with mrkdwn) and `blocks`. It is the `data.chat` of the event.
 */
export function chatMessage(i: Incident, kind: NotifyKind) {
  const icon =
    kind === 'resolved' ? ':white_check_mark:' : i.severity === 'page' ? ':rotating_light:' : ':warning:'
  const text = `${icon} [${i.severity}] Incident ${VERB[kind]}: ${i.summary}`
  const fields = [
    `*Rule:* ${i.rule}`,
    `*Status:* ${i.status}`,
    `*Opened:* ${i.openedAt}`,
    ...(i.runbook ? [`*Runbook:* ${i.runbook}`] : []),
  ]
  return {
    text,
    blocks: [
      { type: 'section', text: { type: 'mrkdwn', text: `*${text}*\n${i.description}` } },
      { type: 'context', elements: fields.map((f) => ({ type: 'mrkdwn', text: f })) },
    ],
  }
}

/**
 * `plinth.incident-notify`: tells people about an incident that opened, escalated or resolved —
 * the event `incident.<kind>` (to every webhook subscribed, signed as every event) and an e-mail to
 * `PLINTH_ALERTS_EMAIL` (opened, resolved) or `PLINTH_ALERTS_ESCALATION_EMAIL` (escalated). Queued
 * once per incident and kind, in the transaction that changed the incident.
 */
export function notifyJob(ctx: ModuleContext) {
  return defineJob({
    name: NOTIFY_JOB,
    description: 'Notifies an incident opened, escalated or resolved (event incident.<kind> and e-mail).',
    payload: Type.Object(
      {
        incidentId: Type.String({ format: 'uuid' }),
        kind: Type.Union([Type.Literal('opened'), Type.Literal('escalated'), Type.Literal('resolved')]),
      },
      { additionalProperties: false },
    ),
    policy: { retryLimit: 5, retryDelay: 10 },
    async handler({ payload, logger, attempt }) {
      const row = await ctx.db.kysely
        .selectFrom('incidents')
        .selectAll()
        .where('id', '=', payload.incidentId)
        .executeTakeFirst()
      if (!row) return { skipped: 'incident gone' }
      const base = toIncident(row)
      const incident = { ...base, runbook: runbookOf(base.labels.alert) }
      const chat = chatMessage(incident, payload.kind)
      const emitted = await ctx.events.emit(
        `incident.${payload.kind}`,
        { incident, ...chat, chat },
        { id: eventIdOf(incident.id, payload.kind) },
      )
      const to = payload.kind === 'escalated' ? ctx.config.alertsEscalationEmail : ctx.config.alertsEmail
      // A retry after a failed send sends again to everyone: e-mail is at least once.
      for (const address of to)
        await ctx.mailer.send({
          to: address,
          subject: chat.text.replace(/^:[a-z_]+: /, ''),
          text: `${incident.description}\n\nRule: ${incident.rule}\nSeverity: ${incident.severity}\nStatus: ${incident.status}\nOpened: ${incident.openedAt}\n${incident.runbook ? `Runbook: ${incident.runbook}\n` : ''}Incident: /api/v1/admin/incidents/${incident.id}\n`,
          category: `incident-${payload.kind}`,
        })
      logger.info(
        {
          incidentId: incident.id,
          kind: payload.kind,
          deliveries: emitted.deliveries,
          mails: to.length,
          attempt,
        },
        'incident notified',
      )
      return { deliveries: emitted.deliveries, mails: to.length }
    },
  })
}
