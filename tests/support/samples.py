"""Small valid qna.yaml texts that tests mutate one rule at a time.

Line numbers matter: tests assert them, so edit these only together with the tests.
"""

SKILL = """\
version: 3
created_by: alice
task_description: Answer questions about units of length.
seed_examples:
  - question: How many centimetres are in a metre?
    answer: There are 100 centimetres in a metre.
  - question: How many metres are in a kilometre?
    answer: There are 1000 metres in a kilometre.
  - question: How many millimetres are in a centimetre?
    answer: There are 10 millimetres in a centimetre.
  - question: How many inches are in a foot?
    answer: There are 12 inches in a foot.
  - question: How many feet are in a yard?
    answer: There are 3 feet in a yard.
"""

KNOWLEDGE = """\
version: 3
created_by: alice
domain: geography
document_outline: Facts about the invented town of Quillby.
seed_examples:
  - context: Quillby was founded in 1702 on the river Tamsel.
    questions_and_answers:
      - question: When was Quillby founded?
        answer: In 1702.
      - question: Which river is Quillby on?
        answer: The Tamsel.
      - question: Is Quillby on a river?
        answer: Yes, on the Tamsel.
  - context: Quillby's bridge has seven arches.
    questions_and_answers:
      - question: How many arches does the bridge have?
        answer: Seven.
      - question: What has seven arches?
        answer: Quillby's bridge.
      - question: Does the bridge have arches?
        answer: Yes, seven of them.
  - context: The town market opens on Thursdays.
    questions_and_answers:
      - question: When does the market open?
        answer: On Thursdays.
      - question: What opens on Thursdays?
        answer: The town market.
      - question: Is there a market?
        answer: Yes, on Thursdays.
  - context: Quillby has 4,200 inhabitants.
    questions_and_answers:
      - question: How many people live in Quillby?
        answer: About 4,200.
      - question: What is the population?
        answer: 4,200 inhabitants.
      - question: Is Quillby a city?
        answer: No, a town of 4,200.
  - context: The mayor is elected every three years.
    questions_and_answers:
      - question: How often is the mayor elected?
        answer: Every three years.
      - question: Who is elected every three years?
        answer: The mayor.
      - question: Is the mayor elected?
        answer: Yes, every three years.
document:
  repo: https://github.com/example/quillby
  commit: 0123456789abcdef0123456789abcdef01234567
  patterns:
    - "quillby.md"
"""

SKILL_PATH = "taxonomy/compositional_skills/units/qna.yaml"
KNOWLEDGE_PATH = "taxonomy/knowledge/geography/quillby/qna.yaml"
