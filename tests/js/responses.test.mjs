// The Responses API through the official openai JavaScript SDK (`responses.create`,
// `responses.stream().finalResponse()`), over an Ollama and an Anthropic upstream.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import OpenAI from 'openai';

import { startFleet } from './harness.mjs';

const TOOLS = [
  {
    type: 'function',
    name: 'get_weather',
    description: 'Weather for a city',
    parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
    strict: false,
  },
];

for (const kind of ['ollama', 'anthropic']) {
  describe(`responses over ${kind}`, () => {
    let fleet;
    let client;
    before(async () => {
      fleet = await startFleet({ kind });
      client = new OpenAI({ baseURL: `${fleet.url}/v1`, apiKey: fleet.userToken, maxRetries: 0 });
    });
    after(() => fleet?.close());

    test('create and stream text', async () => {
      const r = await client.responses.create({ model: 'llama3.1:8b', input: 'hi', instructions: 'Be brief.' });
      assert.equal(r.status, 'completed');
      assert.ok(r.output_text.length > 0);
      assert.equal(r.output[0].type, 'message');

      const stream = client.responses.stream({ model: 'llama3.1:8b', input: 'hi' });
      let text = '';
      const types = [];
      stream.on('event', (ev) => types.push(ev.type));
      stream.on('response.output_text.delta', (ev) => (text += ev.delta));
      const final = await stream.finalResponse();
      assert.equal(final.output_text, text);
      assert.ok(text.length > 0);
      assert.equal(types[0], 'response.created');
      assert.equal(types.at(-1), 'response.completed');
    });

    test('a function call round trip', async () => {
      const first = await client.responses.stream({ model: 'llama3.1:8b', input: 'weather?', tools: TOOLS }).finalResponse();
      const call = first.output.find((o) => o.type === 'function_call');
      assert.equal(call.name, 'get_weather');
      assert.equal(typeof JSON.parse(call.arguments).city, 'string');
      const second = await client.responses.create({
        model: 'llama3.1:8b',
        tools: TOOLS,
        input: [
          { role: 'user', content: 'weather?' },
          ...first.output,
          { type: 'function_call_output', call_id: call.call_id, output: 'sunny' },
        ],
      });
      assert.deepEqual(
        second.output.map((o) => o.type),
        ['message'],
      );
      assert.ok(second.output_text.length > 0);
    });

    test('reasoning summaries when asked', async () => {
      const r = await client.responses.create({
        model: 'qwen3:8b',
        input: 'hi',
        reasoning: { effort: 'low', summary: 'auto' },
      });
      assert.equal(r.output[0].type, 'reasoning');
      assert.ok(r.output[0].summary[0].text.length > 0);
    });

    test('previous_response_id is a clear 400', async () => {
      await assert.rejects(
        client.responses.create({ model: 'llama3.1:8b', input: 'more', previous_response_id: 'resp_x' }),
        (e) => e instanceof OpenAI.BadRequestError && /does not store responses/.test(e.message),
      );
    });

    test('a failure mid-stream raises', async () => {
      await assert.rejects(async () => {
        const s = await client.responses.create({ model: 'llama3.1:8b', input: 'go [[fail_mid]]', stream: true });
        for await (const _ of s) {
          // drained until the error event
        }
      }, OpenAI.APIError);
    });
  });
}
