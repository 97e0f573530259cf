// The official JavaScript SDKs (openai, @anthropic-ai/sdk, ollama) against corral + `corral sim`:
// lists, chat, streams through each SDK's own helpers, tools, embeddings and typed errors.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import Anthropic from '@anthropic-ai/sdk';
import { Ollama } from 'ollama';
import OpenAI from 'openai';

import { startFleet } from './harness.mjs';

const WEATHER = {
  name: 'get_weather',
  description: 'Weather for a city',
  parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
};

let fleet;
let oai;
let claude;
let ollama;

before(async () => {
  fleet = await startFleet({ aliases: { 'claude-*': 'llama3.1:8b' } });
  oai = new OpenAI({ baseURL: `${fleet.url}/v1`, apiKey: fleet.userToken, maxRetries: 0 });
  claude = new Anthropic({ baseURL: fleet.url, apiKey: fleet.userToken, maxRetries: 0 });
  ollama = new Ollama({ host: fleet.url, headers: { Authorization: `Bearer ${fleet.userToken}` } });
});

after(() => fleet?.close());

describe('openai', () => {
  test('lists models and answers a chat', async () => {
    const ids = [];
    for await (const m of oai.models.list()) ids.push(m.id);
    assert.ok(ids.includes('llama3.1:8b'), ids.join(','));
    const r = await oai.chat.completions.create({
      model: 'llama3.1:8b',
      messages: [{ role: 'user', content: 'hi' }],
    });
    assert.ok(r.choices[0].message.content);
    assert.equal(r.choices[0].finish_reason, 'stop');
    assert.ok(r.usage.total_tokens > 0);
  });

  test('chat.completions.stream() gives the final completion and tool calls', async () => {
    const stream = oai.chat.completions.stream({
      model: 'llama3.1:8b',
      messages: [{ role: 'user', content: 'hi' }],
      stream_options: { include_usage: true },
    });
    let deltas = '';
    stream.on('content', (delta) => (deltas += delta));
    const final = await stream.finalChatCompletion();
    assert.equal(final.choices[0].message.content, deltas);
    assert.ok(deltas.length > 0 && final.usage.completion_tokens > 0);

    const tools = oai.chat.completions.stream({
      model: 'llama3.1:8b',
      messages: [{ role: 'user', content: 'weather?' }],
      tools: [{ type: 'function', function: WEATHER }],
    });
    const withCall = await tools.finalChatCompletion();
    const call = withCall.choices[0].message.tool_calls[0];
    assert.equal(call.function.name, 'get_weather');
    assert.equal(typeof JSON.parse(call.function.arguments).city, 'string');
    assert.equal(withCall.choices[0].finish_reason, 'tool_calls');
  });

  test('embeddings decode (base64 by default)', async () => {
    const e = await oai.embeddings.create({ model: 'nomic-embed-text', input: ['a', 'b'] });
    assert.equal(e.data.length, 2);
    assert.ok(e.data[0].embedding.length > 0);
    assert.ok(e.data[0].embedding.every(Number.isFinite));
  });

  test('errors are typed', async () => {
    await assert.rejects(
      oai.chat.completions.create({ model: 'no-such-model', messages: [{ role: 'user', content: 'x' }] }),
      OpenAI.NotFoundError,
    );
    const bad = new OpenAI({ baseURL: `${fleet.url}/v1`, apiKey: 'crl_wrong', maxRetries: 0 });
    await assert.rejects(bad.models.list(), OpenAI.AuthenticationError);
    await assert.rejects(
      oai.chat.completions.create({ model: 'llama3.1:8b', messages: [] }),
      OpenAI.BadRequestError,
    );
  });
});

describe('anthropic', () => {
  test('lists models and answers a message', async () => {
    const page = await claude.models.list();
    assert.ok(page.data.length > 0);
    const m = await claude.messages.create({
      model: 'claude-sonnet-4-5',
      max_tokens: 256,
      messages: [{ role: 'user', content: 'hi' }],
    });
    assert.equal(m.type, 'message');
    assert.equal(m.stop_reason, 'end_turn');
    assert.equal(m.content[0].type, 'text');
    assert.ok(m.content[0].text && m.usage.output_tokens > 0);
  });

  test('messages.stream().finalMessage() and tool use', async () => {
    const stream = claude.messages.stream({
      model: 'claude-sonnet-4-5',
      max_tokens: 256,
      messages: [{ role: 'user', content: 'hi' }],
    });
    let text = '';
    stream.on('text', (t) => (text += t));
    const final = await stream.finalMessage();
    assert.equal(final.content.find((b) => b.type === 'text').text, text);
    assert.ok(text.length > 0);

    const tool = await claude.messages
      .stream({
        model: 'claude-sonnet-4-5',
        max_tokens: 256,
        tools: [{ name: WEATHER.name, description: WEATHER.description, input_schema: WEATHER.parameters }],
        messages: [{ role: 'user', content: 'weather?' }],
      })
      .finalMessage();
    assert.equal(tool.stop_reason, 'tool_use');
    const use = tool.content.find((b) => b.type === 'tool_use');
    assert.equal(use.name, 'get_weather');
    assert.equal(typeof use.input.city, 'string');

    // The result goes back; the model answers in text.
    const answer = await claude.messages.create({
      model: 'claude-sonnet-4-5',
      max_tokens: 256,
      tools: [{ name: WEATHER.name, input_schema: WEATHER.parameters }],
      messages: [
        { role: 'user', content: 'weather?' },
        { role: 'assistant', content: tool.content },
        { role: 'user', content: [{ type: 'tool_result', tool_use_id: use.id, content: 'sunny' }] },
      ],
    });
    assert.equal(answer.stop_reason, 'end_turn');
  });

  test('errors are typed', async () => {
    const bad = new Anthropic({ baseURL: fleet.url, apiKey: 'crl_wrong', maxRetries: 0 });
    await assert.rejects(
      bad.messages.create({ model: 'claude-sonnet-4-5', max_tokens: 8, messages: [{ role: 'user', content: 'x' }] }),
      Anthropic.AuthenticationError,
    );
    await assert.rejects(
      claude.messages.create({ model: 'no-such-model', max_tokens: 8, messages: [{ role: 'user', content: 'x' }] }),
      Anthropic.NotFoundError,
    );
  });
});

describe('ollama', () => {
  test('list, chat, stream, tools and embed', async () => {
    const { models } = await ollama.list();
    assert.ok(models.some((m) => m.name === 'llama3.1:8b'));
    const r = await ollama.chat({ model: 'llama3.1:8b', messages: [{ role: 'user', content: 'hi' }], stream: false });
    assert.ok(r.message.content && r.done);

    let text = '';
    let last;
    for await (const part of await ollama.chat({
      model: 'llama3.1:8b',
      messages: [{ role: 'user', content: 'hi' }],
      stream: true,
    })) {
      text += part.message.content;
      last = part;
    }
    assert.ok(text.length > 0 && last.done && last.eval_count > 0);

    const t = await ollama.chat({
      model: 'llama3.1:8b',
      messages: [{ role: 'user', content: 'weather?' }],
      tools: [{ type: 'function', function: WEATHER }],
      stream: false,
    });
    assert.equal(t.message.tool_calls[0].function.name, 'get_weather');
    assert.equal(typeof t.message.tool_calls[0].function.arguments, 'object');

    const e = await ollama.embed({ model: 'nomic-embed-text', input: ['a', 'b'] });
    assert.equal(e.embeddings.length, 2);
  });

  test('errors carry the status', async () => {
    await assert.rejects(
      ollama.chat({ model: 'no-such-model', messages: [{ role: 'user', content: 'x' }], stream: false }),
      (e) => e.name === 'ResponseError' && e.status_code === 404,
    );
    const bad = new Ollama({ host: fleet.url, headers: { Authorization: 'Bearer crl_wrong' } });
    await assert.rejects(bad.list(), (e) => e.name === 'ResponseError' && e.status_code === 401);
  });
});
